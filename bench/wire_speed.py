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

Where the time goes: every transfer here is on one machine, so both sides share its cores.
The bench samples how busy they were in each round's transfer window (/proc/stat), and, in
this process, times what fedkube's aggregator does to each byte beyond gRPC's own work
(framing a download, checking and spooling an update, reading it back and folding it into
the float64 sums). When the cores are busy in both runs, the rates' ratio is the ratio of
the work per byte: the second table gives it, and the ratio it allows on these cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fedkube.loadtest import Churn, LoadRun, load_manifest, mlp_parameters, run_load

BARE = Path(__file__).with_name("_bare_grpc.py")
MIB = 2**20


class CpuBusy:
    """The machine's CPU time, busy and all, sampled every 20 ms on CLOCK_MONOTONIC (the
    clock the transfers are timed on)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int]] = []  # (time, busy ticks, all ticks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuBusy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
            idle = ticks[3] + ticks[4]  # idle and iowait
            self.samples.append((time.monotonic(), sum(ticks) - idle, sum(ticks)))
            time.sleep(0.02)

    def busy(self, start: float, end: float) -> float:
        """The share of all cores busy between ``start`` and ``end`` (nearest samples)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return float("nan")
        (_, b0, a0), (_, b1, a1) = inside[0], inside[-1]
        return (b1 - b0) / max(1, a1 - a0)


def window_busy(cpu: CpuBusy, transfers: list[list[float]]) -> float:
    """The median over rounds of the cores' busy share in each round's transfer window."""
    rounds: dict[int, list[list[float]]] = {}
    for t in transfers:
        rounds.setdefault(int(t[0]), []).append(t)
    return statistics.median(
        cpu.busy(min(t[2] for t in ts), max(t[3] for t in ts)) for ts in rounds.values()
    )


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


def speed_table(
    sizes: list[float], sites: int, rounds: int, tmp: Path
) -> dict[float, tuple[float, float]]:
    """Prints the rates; returns, per size, the core-seconds per GiB moved of the bare stream
    and of fedkube (both ends: the cores' busy share in the windows over the rate)."""
    cores = os.cpu_count() or 1
    print("## Transfers: fedkube against a bare grpc.aio stream, one run\n")
    print(
        "| parameters | model (MiB) | bare stream: round window (s) | bare MiB/s | cores busy "
        "| fedkube: round window (s) | fedkube MiB/s | cores busy | fedkube / bare "
        "| fedkube round, whole (s) | aggregator idle (MiB) | peak - idle (x model) |"
    )
    print("|" + "---:|" * 12)
    costs = {}
    for size in sizes:
        hidden = hidden_for(size)
        params = mlp_parameters(hidden)
        model_bytes = params * 4
        with CpuBusy() as cpu:
            bare_transfers = bare_stream(model_bytes, sites, rounds)
            run = fedkube_rounds(tmp / f"speed-{params}", hidden, sites, rounds)
        expected(run, sites, rounds)
        bare, ours = round_rates(bare_transfers), round_rates(run.counters.transfers)
        # Every round moved the model down to every site and an update up from each: no rate
        # below is of a partial round, either side.
        for rates in (bare, ours):
            assert sorted(rates) == list(range(1, rounds + 1)), sorted(rates)
            assert {r[2] for r in rates.values()} == {2 * sites * model_bytes}, rates
        bare_rate = statistics.median(r[1] for r in bare.values())
        our_rate = statistics.median(r[1] for r in ours.values())
        bare_busy = window_busy(cpu, bare_transfers)
        our_busy = window_busy(cpu, run.counters.transfers)
        costs[size] = (bare_busy * cores * 1024 / bare_rate, our_busy * cores * 1024 / our_rate)
        whole = statistics.median(h.duration_seconds for h in run.result.history)
        above = (run.peak_bytes - run.idle_bytes) / model_bytes
        print(
            f"| {params / 1e6:.1f} M | {model_bytes / MIB:.0f} "
            f"| {statistics.median(r[0] for r in bare.values()):.2f} | {bare_rate:.0f} "
            f"| {bare_busy * cores:.2f} of {cores} "
            f"| {statistics.median(r[0] for r in ours.values()):.2f} | {our_rate:.0f} "
            f"| {our_busy * cores:.2f} of {cores} "
            f"| {our_rate / bare_rate:.0%} | {whole:.2f} | {run.idle_bytes / MIB:.0f} "
            f"| {above:.2f} |",
            flush=True,
        )
    return costs


def own_work(params: int, sites: int) -> tuple[float, float, float]:
    """Core-seconds per GiB of model, one thread, of what fedkube does to a transfer's bytes
    beyond gRPC, with the aggregator's own code on updates of ``params`` float32 values:
    framing a chunk, checking and spooling an update, reading it back and folding it into
    a round's sums with ``sites`` updates."""
    from fedkube.accumulate.weighted_mean import WeightedMean
    from fedkube.aggregator.updates import SpooledUpdate
    from fedkube.proto import fedkube_pb2 as pb
    from fedkube.wire.chunk_frames import decode_update_part
    from fedkube.wire.tensors import chunk_frames, specs_of, to_spec

    values = np.full(params, 1e-3, dtype=np.float32)
    infos = specs_of({"w": values})
    header = pb.UpdateHeader(
        ref=pb.RoundRef(job="j", round=1, site="s"),
        num_samples=3,
        tensors=[to_spec(i) for i in infos],
    )
    gib = values.nbytes / 2**30

    def timed(work: Callable[[], object]) -> float:
        best = math.inf
        for _ in range(3):
            started = time.process_time()
            work()
            best = min(best, time.process_time() - started)
        return best / gib

    def frames() -> None:
        for _ in chunk_frames([values]):  # each sent and let go, as the service does
            pass

    received = [decode_update_part(f) for f, _ in chunk_frames([values])]

    def spooled() -> SpooledUpdate:
        update = SpooledUpdate(header, infos)
        for part in received:
            update.add(part.chunk)
        update.finish()
        return update

    def round_folded() -> None:
        # A round's sums, made once and touched by its first update, take every site's.
        sums = WeightedMean(infos)
        for _ in range(sites):
            sums.add(spooled())

    spool = timed(lambda: spooled().close())
    return timed(frames), spool, timed(round_folded) / sites - spool


def work_table(sizes: list[float], sites: int, costs: dict[float, tuple[float, float]]) -> None:
    """``costs``: per size, the core-seconds per GiB moved of the bare stream and of fedkube,
    both ends, from the cores' busy share in the transfer windows."""
    print("\n## Where the time goes: core-seconds per GiB moved, both ends together\n")
    print(
        "| parameters | bare stream (gRPC alone) | fedkube | framing a chunk | checking and "
        "spooling an update | reading it back and folding it | fedkube's own work "
        "| bare / (bare + own work) |"
    )
    print("|" + "---:|" * 8)
    for size in sizes:
        frame, spool, fold = own_work(mlp_parameters(hidden_for(size)), sites)
        # A round moves each site's model down and its update up. Per GiB moved: each GiB of
        # model is framed twice (the download here, the upload at the site), spooled and
        # folded once; every half of what moved.
        own = (2 * frame + spool + fold) / 2
        bare, ours = costs[size]
        print(
            f"| {size / 1e6:.1f} M | {bare:.2f} | {ours:.2f} | {frame:.2f} | {spool:.2f} "
            f"| {fold:.2f} | {own:.2f} | {bare / (bare + own):.0%} |"
        )
    print(
        "\n(framing, spooling and folding: core-seconds per GiB of model, this process, one "
        "thread; the last column is the share of the bare stream's rate these cores allow "
        "fedkube when both runs keep them busy)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=float, nargs="+", default=[10e6, 100e6])
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fedkube-wire-") as tmp:
        costs = speed_table(args.params, args.sites, args.rounds, Path(tmp))
    work_table(args.params, args.sites, costs)
    print(f"\n(wall {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
