"""fedkube's wire against gRPC's own speed.

    python bench/wire_speed.py [--params 10e6 100e6] [--rounds 3]

Speed: for each model size, one run of a bare grpc.aio stream (`bench/_bare_grpc.py`: raw
bytes in 1 MiB messages, gRPC's default options) and one of a real `fedkube aggregator` with
5 synthetic sites (`fedkube.loadtest`, lean: no training, no sums checked; the real protocol,
one connection each), side by side. In both, every site downloads the model and uploads an
update of its size each round, all at once; a round's transfer rate is the bytes moved, down
and up, over the time from its first transfer's start to its last one's end (the round's
fold, checkpoint and evaluation come after and are shown apart). The aggregator's memory
as sites are added is `bench/large_model_memory.py`'s.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedkube.loadtest import Churn, LoadRun, load_manifest, mlp_parameters, run_load

BARE = Path(__file__).with_name("_bare_grpc.py")
MIB = 2**20


def hidden_for(params: float) -> list[int]:
    """Two equal hidden layers of the digits MLP (64 -> h -> h -> 10) for about ``params``."""
    h = int((-76 + math.sqrt(76**2 + 4 * (params - 10))) / 2)
    return [h, h]


def round_rates(transfers: list[list[float]]) -> dict[int, tuple[float, float, int]]:
    """Per round: (window seconds, MiB/s over the window, bytes)."""
    rounds: dict[int, list[list[float]]] = {}
    for t in transfers:
        rounds.setdefault(int(t[0]), []).append(t)
    out = {}
    for number, ts in rounds.items():
        window = max(t[3] for t in ts) - min(t[2] for t in ts)
        moved = int(sum(t[4] for t in ts))
        out[number] = (window, moved / MIB / window, moved)
    return out


def bare_stream(nbytes: int, sites: int, rounds: int) -> list[list[float]]:
    server = subprocess.Popen(
        [sys.executable, str(BARE), "serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        sites_args = ["--sites", str(sites), "--bytes", str(nbytes), "--rounds", str(rounds)]
        out = subprocess.run(
            [sys.executable, str(BARE), "sites", "--endpoint", f"127.0.0.1:{port}", *sites_args],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        server.kill()
        server.wait()
    transfers: list[list[float]] = json.loads(out.stdout)
    return transfers


def fedkube_rounds(folder: Path, hidden: list[int], sites: int, rounds: int) -> LoadRun:
    doc = load_manifest(f"wire-{sites}", sites, rounds, hidden, minSitesPerRound=sites)
    folder.mkdir(parents=True)
    return run_load(folder, doc, processes=1, churn=Churn(), lean=True)


def expected(run: LoadRun, sites: int, rounds: int) -> None:
    """Every site answered every round: no rate below is of a partial round."""
    got = [len(h.sites) for h in run.result.history]
    assert got == [sites] * rounds, f"rounds' sites {got}, expected {sites} each"


def speed_table(sizes: list[float], sites: int, rounds: int, tmp: Path) -> None:
    print("## Transfers: fedkube against a bare grpc.aio stream, one run\n")
    print(
        "| parameters | model (MiB) | bare stream: round window (s) | bare MiB/s "
        "| fedkube: round window (s) | fedkube MiB/s | fedkube / bare "
        "| fedkube round, whole (s) | aggregator idle (MiB) | peak - idle (x model) |"
    )
    print("|" + "---:|" * 10)
    for size in sizes:
        hidden = hidden_for(size)
        params = mlp_parameters(hidden)
        model_bytes = params * 4
        bare = round_rates(bare_stream(model_bytes, sites, rounds))
        run = fedkube_rounds(tmp / f"speed-{params}", hidden, sites, rounds)
        expected(run, sites, rounds)
        ours = round_rates(run.counters.transfers)
        # Every round moved the model down to every site and an update up from each: no rate
        # below is of a partial round, either side.
        for rates in (bare, ours):
            assert sorted(rates) == list(range(1, rounds + 1)), sorted(rates)
            assert {r[2] for r in rates.values()} == {2 * sites * model_bytes}, rates
        bare_rate = statistics.median(r[1] for r in bare.values())
        our_rate = statistics.median(r[1] for r in ours.values())
        whole = statistics.median(h.duration_seconds for h in run.result.history)
        above = (run.peak_bytes - run.idle_bytes) / model_bytes
        print(
            f"| {params / 1e6:.1f} M | {model_bytes / MIB:.0f} "
            f"| {statistics.median(r[0] for r in bare.values()):.2f} | {bare_rate:.0f} "
            f"| {statistics.median(r[0] for r in ours.values()):.2f} | {our_rate:.0f} "
            f"| {our_rate / bare_rate:.0%} | {whole:.2f} | {run.idle_bytes / MIB:.0f} "
            f"| {above:.2f} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=float, nargs="+", default=[10e6, 100e6])
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fedkube-wire-") as tmp:
        speed_table(args.params, args.sites, args.rounds, Path(tmp))
    print(f"\n(wall {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
