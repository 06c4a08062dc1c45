"""Transfers over a long link: what a site's download and upload move at a given round-trip
time, the aggregator unchanged.

    python bench/long_link.py [--rtt-ms 0 20 50 100] [--params 10e6] [--sites 2]
                              [--upload-window 4096 64]

A real `fedkube aggregator` and synthetic sites (`fedkube.loadtest`, lean: the real protocol,
no training), the sites reaching it through `bench/_latency_proxy.py`, which holds every
byte half the round-trip time each way (this machine has no netem). Per round-trip time: the
median rate of the sites' model downloads and update uploads, and what that rate means in
flight (rate x RTT): the window the transfer was held to; once per aggregator upload window
(`--upload-window`, KiB: the default, and gRPC's own 64 KiB as before the sites waited for a
go-ahead). The proxy has no bandwidth limit of its own, but it is one Python process: at 0 ms
the sites reach the aggregator directly.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from fedkube.aggregator.transfer_pace import UPLOAD_WINDOW_KIB
from fedkube.loadtest import Churn, load_manifest, mlp_parameters, run_load
from wire_speed import hidden_for

PROXY = Path(__file__).with_name("_latency_proxy.py")
MIB = 2**20


def rates(
    rtt_ms: float, window_kib: int, hidden: list[int], sites: int, rounds: int, tmp: Path
) -> list[float]:
    """Median download and upload rates (MiB/s) through a link of ``rtt_ms``, the aggregator's
    upload window ``window_kib``."""
    proxies: list[subprocess.Popen[str]] = []

    def reach(port: int) -> str:
        if rtt_ms <= 0:
            return f"127.0.0.1:{port}"
        proxy = subprocess.Popen(
            [
                sys.executable,
                str(PROXY),
                "--to",
                f"127.0.0.1:{port}",
                "--delay-ms",
                str(rtt_ms / 2),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        proxies.append(proxy)
        assert proxy.stdout is not None
        return f"127.0.0.1:{proxy.stdout.readline().strip()}"

    folder = tmp / f"rtt-{rtt_ms:g}-window-{window_kib}"
    folder.mkdir()
    doc = load_manifest("long-link", sites, rounds, hidden, minSitesPerRound=sites)
    try:
        window = ["--upload-window", str(window_kib)]
        run = run_load(folder, doc, 1, Churn(), lean=True, reach=reach, aggregator_args=window)
    finally:
        for proxy in proxies:
            proxy.kill()
            proxy.wait()
    transfers = run.counters.transfers
    assert len(transfers) == 2 * sites * rounds, f"{len(transfers)} transfers timed"
    return [
        statistics.median(t[4] / MIB / (t[3] - t[2]) for t in transfers if t[1] == kind)
        for kind in (0, 1)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rtt-ms", type=float, nargs="+", default=[0, 20, 50, 100])
    ap.add_argument("--params", type=float, default=10e6)
    ap.add_argument("--sites", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--upload-window", type=int, nargs="+", default=[UPLOAD_WINDOW_KIB, 64])
    args = ap.parse_args()
    hidden = hidden_for(args.params)
    model = mlp_parameters(hidden) * 4
    print(f"model: {model / MIB:.0f} MiB; {args.sites} sites, {args.rounds} rounds each\n")
    print("| upload window | round trip | download MiB/s | in flight | upload MiB/s | in flight |")
    print("|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="fedkube-long-link-") as tmp:
        for window in args.upload_window:
            for rtt in args.rtt_ms:
                down, up = rates(rtt, window, hidden, args.sites, args.rounds, Path(tmp))
                flight = [f"{r * rtt / 1000:.2f} MiB" if rtt > 0 else "-" for r in (down, up)]
                print(
                    f"| {window} KiB | {rtt:g} ms | {down:.1f} | {flight[0]} | {up:.1f} "
                    f"| {flight[1]} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
