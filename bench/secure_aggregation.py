"""What secure aggregation costs: 10 sites on a 100k-parameter model, the same job with and
without it, side by side.

    python bench/secure_aggregation.py [--sites 10] [--rounds 40] [--local-epochs 1 5]
                                       [--repeats 2]

Real `fedkube aggregator` and `fedkube trainer` processes over gRPC on loopback. Round time is
shown two ways: time per round in steady state (from round 1's close to the last round's,
over the rounds between: what a job's length follows) and the aggregator's own round
duration (a round's opening to its close, training included; median and middle half over
the rounds after the first); the protocol's cost per round is about fixed, so it is shown at two
amounts of local work. Bytes are every protocol message's serialised size as the aggregator
counted it (fedkube_message_bytes), per round: what the sites sent, and what they were sent.

Eleven processes share the machine's cores, so a busy spell elsewhere on it moves a run's
times by tens of percent. Each pair is run ``--repeats`` times in alternating order (plain
first, then secure first), and the ratios are summarised by their median.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from fedkube.testing import LocalJob, manifest
from prometheus_client.parser import text_string_to_metric_families

HIDDEN = [1333]  # digits: 64 -> 1333 -> 10, 99,985 parameters


def n_params() -> int:
    return 64 * HIDDEN[0] + HIDDEN[0] + HIDDEN[0] * 10 + 10


def message_bytes(job: LocalJob) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{job.http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "fedkube_message_bytes_total":
                out[(s.labels["direction"], s.labels["call"])] = s.value
    return out


def run(doc: dict, folder: Path) -> dict:
    folder.mkdir()
    job = LocalJob(folder, doc)
    # Linger after the last round so the metrics can be read before the aggregator exits.
    job.aggregator_args = ["--linger-seconds", "30"]
    try:
        job.start_all()
        # The report as JSON (camelCase keys), as /progress serves it.
        p = job.wait_for(lambda p: p.finished, timeout=900).to_json_dict()
        counted = message_bytes(job)
    finally:
        job.stop()
    assert p["phase"] == "Succeeded", p["message"]
    history = p["history"]
    durations = [h["durationSeconds"] for h in history[1:]]  # round 1 pays first calls
    rounds = len(history)
    received = sum(v for (d, _), v in counted.items() if d == "received") / rounds
    sent = sum(v for (d, _), v in counted.items() if d == "sent") / rounds
    return {
        "round": float(np.median(durations)),
        # Steady state, gaps between rounds included: what a job's length follows.
        "per_round": (history[-1]["closedAt"] - history[0]["closedAt"]) / (rounds - 1),
        "q1": float(np.percentile(durations, 25)),
        "q3": float(np.percentile(durations, 75)),
        # Under secure aggregation sites send no timings (they would leave in the clear).
        "train": float(np.median([h.get("maxTrainSeconds", 0.0) for h in history[1:]])),
        "up": received,
        "down": sent,
        "calls": counted,
        "rounds": rounds,
        "accuracy": p.get("global", {}).get("accuracy"),
        "stages": stage_medians(history),
        # Rounds that opened with their key exchange made on the last round's messages.
        "ahead": sum(
            "ADVERTISE_KEYS" not in h["secureAggregation"]["stageSeconds"]
            for h in history
            if "secureAggregation" in h
        ),
    }


STAGES = ("ADVERTISE_KEYS", "SHARE_KEYS", "MASKED_UPDATE", "UNMASK")


def stage_medians(history: list[dict]) -> dict[str, tuple[float, int]]:
    """Per stage: the median seconds over the rounds that had it, and how many did."""
    out = {}
    for stage in STAGES:
        seconds = [
            h["secureAggregation"]["stageSeconds"][stage]
            for h in history
            if stage in h.get("secureAggregation", {}).get("stageSeconds", {})
        ]
        if seconds:
            out[stage] = (float(np.median(seconds)), len(seconds))
    return out


def _train(r: dict) -> str:
    return f"{r['train']:.3f}" if r["train"] > 0 else "not sent"


def job_pair(sites: int, rounds: int, epochs: int) -> tuple[dict, dict]:
    plain = manifest(
        f"plain-{epochs}",
        sites=sites,
        rounds=rounds,
        dataset="digits",
        min_sites=sites,
        model={"name": "mlp", "hiddenSizes": HIDDEN},
        local_epochs=epochs,
        timeout=300,
        joinGraceSeconds=300,
    )
    plain["spec"]["task"].update(batchSize=32, learningRate=0.05)
    secure = copy.deepcopy(plain)
    secure["metadata"]["name"] = f"secure-{epochs}"
    secure["spec"]["security"] = {"secureAggregation": {}}
    return plain, secure


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--local-epochs", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(
        f"{args.sites} sites, MLP 64-{HIDDEN[0]}-10 ({n_params():,} parameters, "
        f"{n_params() * 4 / 1e6:.2f} MB as float32), {args.rounds} rounds, digits "
        f"(about {1797 * 0.8 / args.sites:.0f} training examples a site)\n"
    )
    results: dict[tuple[int, int, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for epochs in args.local_epochs:
            plain, secure = job_pair(args.sites, args.rounds, epochs)
            docs = {"plain": plain, "secure": secure}
            for repeat in range(args.repeats):
                order = ("plain", "secure") if repeat % 2 == 0 else ("secure", "plain")
                for name in order:
                    started = time.monotonic()
                    folder = Path(tmp) / f"{name}-{epochs}-{repeat}"
                    results[(epochs, repeat, name)] = run(docs[name], folder)
                    print(
                        f"  {epochs} epochs, repeat {repeat + 1}, {name}: "
                        f"{time.monotonic() - started:.0f} s",
                        file=sys.stderr,
                    )
    print(
        "| local epochs | repeat | run | time per round (s) | vs plain | median round, open to "
        "close (s) | middle half (s) | vs plain | slowest site's training (s) | sites -> "
        "aggregator (MB/round) | vs plain | aggregator -> sites (MB/round) | vs plain "
        "| accuracy |"
    )
    print("|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for (epochs, repeat, name), r in sorted(results.items(), key=lambda kv: kv[0]):
        base = results[(epochs, repeat, "plain")]
        print(
            f"| {epochs} | {repeat + 1} | {name} | {r['per_round']:.3f} "
            f"| {r['per_round'] / base['per_round']:.2f}x "
            f"| {r['round']:.3f} | {r['q1']:.3f} to {r['q3']:.3f} "
            f"| {r['round'] / base['round']:.2f}x | {_train(r)} | {r['up'] / 1e6:.3f} "
            f"| {r['up'] / base['up']:.3f}x | {r['down'] / 1e6:.3f} "
            f"| {r['down'] / base['down']:.3f}x | {r['accuracy']:.4f} |"
        )
    print("\nSecure against plain, median over the repeats:\n")
    print("| local epochs | time per round | open to close | bytes up | bytes down |")
    print("|---:|---:|---:|---:|---:|")
    for epochs in args.local_epochs:

        def ratio(key: str, epochs: int = epochs) -> float:
            return float(
                np.median(
                    [
                        results[(epochs, i, "secure")][key] / results[(epochs, i, "plain")][key]
                        for i in range(args.repeats)
                    ]
                )
            )

        print(
            f"| {epochs} | {ratio('per_round'):.2f}x | {ratio('round'):.2f}x "
            f"| {ratio('up'):.3f}x | {ratio('down'):.3f}x |"
        )
    print(
        "\nSecure aggregation's stages, median seconds (over the rounds that had the stage), "
        "and the rounds that opened with their key exchange made on the last round's "
        "masked updates and reveals:\n"
    )
    print("| local epochs | " + " | ".join(STAGES) + " | rounds opened at MASKED_UPDATE |")
    print("|---:|" + "---:|" * (len(STAGES) + 1))
    for epochs in args.local_epochs:
        r = results[(epochs, 0, "secure")]
        cells = [
            f"{r['stages'][k][0]:.3f} ({r['stages'][k][1]} rounds)" if k in r["stages"] else "-"
            for k in STAGES
        ]
        print(f"| {epochs} | " + " | ".join(cells) + f" | {r['ahead']} of {r['rounds']} |")
    first = args.local_epochs[0]
    print(f"\nBytes per round by call, sites -> aggregator ({first} local epoch(s)):\n")
    print("| call | plain (kB) | secure aggregation (kB) |")
    print("|---|---:|---:|")
    pair = [results[(first, 0, "plain")], results[(first, 0, "secure")]]
    calls = sorted({c for r in pair for d, c in r["calls"] if d == "received"})
    for call in calls:
        row = [r["calls"].get(("received", call), 0.0) / r["rounds"] / 1e3 for r in pair]
        print(f"| {call} | {row[0]:.1f} | {row[1]:.1f} |")


if __name__ == "__main__":
    main()
