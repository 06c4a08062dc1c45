"""fedkube beside Flower 1.42 and NVIDIA FLARE 2.9 on the same jobs, data, models and machine.

    python bench/peers/run.py                          # every job, every system
    python bench/peers/run.py --jobs breast-cancer --systems fedkube flower-simulation
    python bench/peers/run.py --plot docs/images/peers.png --json /tmp/peers.json

Installs each peer from PyPI into a virtual environment of its own (~/.cache/fedkube-peers,
first run only, not timed), writes each job's data once (jobs.py: the very rows fedkube's
trainers use, as .npz for the peers), then runs each job with each system in turn, one at a
time, every process with one torch thread. Per job and system it prints: the time from launch
to the first round's training, what a round costs beyond its slowest site's training (median
of rounds 2..R), the whole run (launch to the final global model written), the peak PSS
summed over every process the run started, the bytes over loopback per round, and the final
model's accuracy on the union of the sites' held-out rows (scored here, the same way for all).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import jobs  # noqa: E402
import measure  # noqa: E402
import numpy as np  # noqa: E402
import systems  # noqa: E402
from measure import Measurement  # noqa: E402


def final_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    with np.load(path) as data:  # numpy arrays only: allow_pickle stays False
        return {k: data[k] for k in data.files}


def measure_one(system: str, job: jobs.Job, job_dir: Path, work_root: Path) -> Measurement:
    work = work_root / job.name / system
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    events = job_dir / "events.jsonl"
    for stale in (events, job_dir / "flower-global.npz", job_dir / "flare-global.npz"):
        stale.unlink(missing_ok=True)
    tag = uuid.uuid4().hex
    env = {
        **os.environ,
        measure.TAG: tag,
        "PEERS_JOB_DIR": str(job_dir),
        "PEERS_EVENTS": str(events),
        "PYTHONPATH": os.pathsep.join(
            [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]
        ),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    sampler = measure.PeakPss(tag)
    lo_before = measure.loopback_bytes()
    launched = time.time()
    sampler.start()
    try:
        final = systems.SYSTEMS[system][1](systems.Run(job_dir, work, env, work / "logs"))
    finally:
        pss = sampler.stop()
        lo_bytes = measure.loopback_bytes() - lo_before
        measure.kill_tagged(tag)
    done = final.stat().st_mtime
    if system == "fedkube":
        result = json.loads((work / "out" / "result.json").read_text())
        rounds = measure.rounds_from_fedkube(result)
    else:
        rounds = measure.rounds_from_events(events, jobs.SITES, job.rounds)
    acc = measure.accuracy(job_dir, final_arrays(final))
    return Measurement.of(system, job.name, launched, done, rounds, pss, lo_bytes, acc, job.rounds)


def table(job: jobs.Job, rows: list[Measurement]) -> str:
    lines = [
        f"### {job.title}\n",
        "| system | to round 1 (s) | per round beyond training (s) | whole run (s) | "
        "peak PSS, all processes (MB) | loopback per round (MB) | accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in rows:
        lines.append(
            f"| {systems.SYSTEMS[m.system][0]} | {m.to_first_round:.2f} | {m.round_overhead:.3f} "
            f"| {m.whole_run:.1f} | {m.peak_pss_bytes / 1e6:,.0f} | "
            f"{m.bytes_per_round / 1e6:,.1f} | {100 * m.accuracy:.2f} % |"
        )
    return "\n".join(lines) + "\n"


def ratios(rows: list[Measurement]) -> str:
    """Each peer against fedkube, per job: whole run, per-round cost and memory."""
    lines = ["| job | system | whole run | per round beyond training | peak PSS |",
             "|---|---|---:|---:|---:|"]  # fmt: skip
    base = {m.job: m for m in rows if m.system == "fedkube"}
    for m in rows:
        b = base.get(m.job)
        if b is None or m.system == "fedkube":
            continue
        lines.append(
            f"| {m.job} | {m.system} | {m.whole_run / b.whole_run:.1f}x | "
            f"{m.round_overhead / b.round_overhead:.0f}x | "
            f"{m.peak_pss_bytes / b.peak_pss_bytes:.1f}x |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[Measurement], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(m.job for m in rows))
    kinds = list(dict.fromkeys(m.system for m in rows))
    panels = (
        ("whole run (s)", lambda m: m.whole_run),
        ("per round beyond training (s)", lambda m: m.round_overhead),
        ("peak PSS, all processes (GB)", lambda m: m.peak_pss_bytes / 1e9),
    )
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    width = 0.8 / len(kinds)
    for ax, (title, value) in zip(axes, panels, strict=True):
        for k, kind in enumerate(kinds):
            got = {m.job: value(m) for m in rows if m.system == kind}
            xs = [i + k * width for i, n in enumerate(names) if n in got]
            ax.bar(xs, [got[n] for n in names if n in got], width, label=kind)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", nargs="+", default=list(jobs.JOBS), choices=list(jobs.JOBS))
    ap.add_argument(
        "--systems", nargs="+", default=list(systems.SYSTEMS), choices=list(systems.SYSTEMS)
    )
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="write every measurement here")
    ap.add_argument("--plot", type=Path, help="write a bar chart (PNG) here")
    args = ap.parse_args()
    for prefix, venv in (("flower", "flwr-1.42"), ("flare", "nvflare-2.9")):
        if any(s.startswith(prefix) for s in args.systems):
            systems.venv(venv)  # installed before anything is timed
    work = args.work or Path(tempfile.mkdtemp(prefix="fedkube-peers-"))
    rows: list[Measurement] = []
    for name in args.jobs:
        job = jobs.JOBS[name]
        job_dir = jobs.prepare(job, work / name / "data")
        done: list[Measurement] = []
        for system in args.systems:
            print(f"{name}: {system} ...", flush=True)
            try:
                m = measure_one(system, job, job_dir, work)
            except Exception as e:  # one system failing leaves the others' figures standing
                print(f"  FAILED: {e}\n  (its logs: {work / name / system / 'logs'})", flush=True)
                systems.settle()
                continue
            mb, acc = m.peak_pss_bytes / 1e6, 100 * m.accuracy
            print(f"  {m.whole_run:.1f} s, {mb:,.0f} MB, {acc:.2f} %", flush=True)
            done.append(m)
            systems.settle()
        rows += done
        print("\n" + table(job, done), flush=True)
    print(f"machine: {os.cpu_count()} cores; work in {work}\n")
    print(ratios(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(m) for m in rows], indent=1))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
