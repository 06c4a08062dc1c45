"""What the aggregator reports of its job: ``/progress`` while it runs."""

from __future__ import annotations

from fedkube.aggregator.coordinator import Coordinator
from fedkube.proto import fedkube_pb2 as pb
from fedkube.spec.progress import Progress


def progress(c: Coordinator) -> Progress:
    r = c.open
    return Progress(
        job=c.job.name,
        phase=c.phase,
        message=c.message,
        round=c.rounds_completed,
        total_rounds=c.spec.rounds,
        open_round=r.number if r else None,
        open_stage=pb.Stage.Name(r.stage) if r else None,
        sites_connected=sorted(n for n, s in c.sites.items() if s.connected),
        global_=c.log.latest_global(),
        sites={n: s.summary() for n, s in c.sites.items()},
        history=c.history,
        privacy=c.privacy.report(c.history),
        initial_evaluation=c.log.initial_evaluation,
        model_path=c.result.model_path if c.result else None,
    )
