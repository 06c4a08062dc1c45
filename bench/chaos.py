"""The chaos soak, at length: a job of ROUNDS rounds on a test control plane of its own, with
a seeded schedule of FAULTS faults of every kind the harness makes (SIGKILL of the
aggregator's and trainers' processes and of the operator, kube-apiserver and etcd restarts, a
trainer stopped past the round timeout, its connections cut), beside a record-level DP job
whose ledgers are watched. Prints faults injected and survived per kind, the time each kind
cost, rounds run twice, ledger drops, and whether the model is bit for bit the undisturbed
run's (every site is needed each round, so it must be).

    python bench/chaos.py [--rounds 80] [--faults 56] [--seed 1] [--local-epochs 40]

Faults come one at a time: each waits until a round closed after the one before. More local
epochs make rounds longer, so fewer rounds hold the whole schedule.

Needs what `bash tests/run-all.sh` builds (the control-plane binaries); a few tens of minutes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kube_harness.chaos import KINDS, Soak, outputs, table, undisturbed  # noqa: E402
from tests.kube_harness.controlplane import ControlPlane, binaries  # noqa: E402
from tests.kube_harness.node_agent import NodeAgent  # noqa: E402
from tests.kube_harness.operator_env import OperatorProcess  # noqa: E402


def main() -> int:
    # The node agent and the Kubernetes client retry through each API server restart, loudly.
    for name in ("node-agent", "urllib3", "kubernetes"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=80)
    ap.add_argument("--faults", type=int, default=8 * len(KINDS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--every", type=float, nargs=2, default=(1.0, 4.0), metavar=("MIN", "MAX"))
    ap.add_argument("--local-epochs", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedkube-chaos-") as tmp:
        folder = Path(tmp)
        cp = ControlPlane("chaos", folder / "cp", binaries()).start()
        agent = NodeAgent(cp.kubeconfig, folder / "node").start()
        operator = OperatorProcess(cp, folder / "operator").start()
        try:
            for ns in ("calm", "wild"):
                cp.kubectl("create", "namespace", ns)
            started = time.monotonic()
            reference = undisturbed(
                cp, agent, "calm", "chaos", args.rounds, 7200, args.local_epochs
            )
            calm_seconds = time.monotonic() - started
            soak = Soak(
                cp, agent, operator, "wild", "chaos", "chaos-dp", args.seed, args.local_epochs
            )
            started = time.monotonic()
            final = soak.run(args.rounds, args.faults, tuple(args.every), timeout=4 * 7200)
            wild_seconds = time.monotonic() - started
            ok = final["job"].get("phase") == "Succeeded"
            result, model = outputs(agent, "wild", "chaos") if ok else ({"history": []}, b"")
            rounds = [h["round"] for h in result["history"]]
            print(
                f"chaos soak: {args.rounds} rounds of {args.local_epochs} local epochs, "
                f"{len(soak.faults)} faults, seed {args.seed}"
            )
            print("\n".join(table(soak, ok)))
            print(f"job: {final['job'].get('phase')}; DP job: {final['private'].get('phase')}")
            print(f"rounds run twice: {len(rounds) - len(set(rounds))}")
            print(f"ledger reads: {soak.ledger_reads}, drops: {len(soak.ledger_drops)}")
            print(f"model bit-equal to the undisturbed run's: {model == reference}")
            print(
                f"wall: undisturbed {calm_seconds:.0f} s, under faults {wild_seconds:.0f} s "
                f"(a round: {soak.round_seconds():.2f} s median)"
            )
            return 0 if ok and model == reference and not soak.ledger_drops else 1
        finally:
            operator.stop()
            agent.stop()
            cp.stop()


if __name__ == "__main__":
    raise SystemExit(main())
