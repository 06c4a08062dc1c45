"""What `fedkube run` prints: one line per round, and the final per-site table."""

from __future__ import annotations

from pathlib import Path

from fedkube.spec.progress import JobResult, RoundRecord, Scores


def round_line(h: RoundRecord, total: int, n_sites: int) -> str:
    acc = h.accuracy
    return (
        f"round {h.round:>4}/{total}  sites {len(h.sites)}/{n_sites}  "
        f"train_loss {fmt(h.train_loss)}  loss {fmt(h.loss)}  "
        f"accuracy {'   -  ' if acc is None else f'{100 * acc:6.2f}%'}  "
        f"{h.duration_seconds:.2f}s  up {kilobytes(h.bytes_received)} "
        f"down {kilobytes(h.bytes_sent)}"
    )


def kilobytes(n: int) -> str:
    return f"{n / 1e3:.1f} kB" if n < 10**7 else f"{n / 1e6:.1f} MB"


def result_table(result: JobResult, path: Path) -> list[str]:
    sites, g = result.sites, result.global_ or Scores()
    extra = [
        (key, title)
        for key, title in (("auc", "auc"), ("personal_accuracy", "personal"))
        if any(getattr(scores, key) is not None for scores in [*sites, g])
    ]
    lines = [
        "",
        f"{'site':<20} {'samples':>8} {'held-out':>8} {'loss':>8} {'accuracy':>9}"
        + "".join(f" {title:>9}" for _, title in extra),
    ]
    rows: list[tuple[str, int, int, Scores]] = [
        (s.name, s.samples, s.eval_samples, s) for s in sites
    ]
    held_out = result.global_.eval_samples if result.global_ else 0
    rows.append(("global", sum(s.samples for s in sites), held_out, g))
    for name, samples, held_out, scores in rows:
        cells = [
            fmt(getattr(scores, key)) if key == "auc" else pct(getattr(scores, key))
            for key, _ in extra
        ]
        # A site that kept its scores (a private job) shows none, its held-out count too.
        shown = str(held_out) if held_out or scores.accuracy is not None else "-"
        lines.append(
            f"{name:<20} {samples:>8} {shown:>8} {fmt(scores.loss):>8} "
            f"{pct(scores.accuracy):>9}" + "".join(f" {c:>9}" for c in cells)
        )
    spread = result.global_.accuracy_spread if result.global_ else None
    if spread is not None:
        lines.append(f"spread of site accuracy (best - worst): {100 * spread:.2f} points")
    if result.global_ is None or result.global_.accuracy is None:
        lines.append(
            "no federated evaluation: under differential privacy without secure aggregation "
            "the sites keep their scores unless the job sets evaluation.noiseMultiplier"
        )
    elif result.global_.from_counts:
        epsilon = result.global_.held_out_epsilon
        noised = f", noised (held-out epsilon {epsilon:.2f})" if epsilon is not None else ""
        lines.append(
            "a private job: each site keeps its own scores; the global ones are from the "
            f"sites' summed counts{noised}"
        )
    lines += [
        "",
        f"{result.rounds_completed} rounds in {result.wall_seconds:.1f}s; model saved "
        f"to {result.model_path}; result in {path}",
    ]
    return lines


def fmt(v: float | None) -> str:
    return "   -  " if v is None else f"{v:.4f}"


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
