"""Pure: what the coordinator says (a round's task, the model's header, the job's end, why a
round failed), built from what it decided; nothing here reads or changes its state."""

from __future__ import annotations

import numpy as np

from fedkube.aggregator.rounds import OpenRound
from fedkube.proto import fedkube_pb2 as pb
from fedkube.spec.job import JobSpec
from fedkube.spec.preprocessing import Preprocessing
from fedkube.wire.tensors import specs_of, to_spec


def task_message(
    job: str, r: OpenRound, site: str, deadline_unix: float, pre: Preprocessing | None
) -> pb.Task:
    """The round's task for one site (secure aggregation fills in its own part after)."""
    task = pb.Task(
        ref=pb.RoundRef(job=job, round=r.number, attempt=r.attempt, site=site),
        stage=r.stage,
        model_version=r.model_version,
        evaluate=r.evaluate,
        config=r.config,
        deadline_unix_seconds=deadline_unix,
    )
    if pre is not None:
        task.preprocessing = pre.to_json()
    return task


def model_header(
    job: str,
    r: OpenRound | None,
    version: int,
    site: str,
    tensors: dict[str, np.ndarray],
    codec: pb.Codec,
    base: int,
) -> pb.ModelHeader:
    """The header before the model's tensors: for the open round (or the last closed one)."""
    return pb.ModelHeader(
        ref=pb.RoundRef(
            job=job,
            round=r.number if r else version,
            attempt=r.attempt if r else 0,
            site=site,
        ),
        model_version=version,
        tensors=[to_spec(i) for i in specs_of(tensors)],
        codec=codec,
        base_version=base,
    )


def finished_event(job: str, rounds: int, succeeded: bool, message: str) -> pb.Event:
    return pb.Event(
        finished=pb.Finished(job=job, rounds_completed=rounds, succeeded=succeeded, message=message)
    )


def why_short(spec: JobSpec, declined: str) -> str:
    """How a round's attempts fell short, to follow "in N attempts": the sites that declined
    it (``declines_note``), or the deadline."""
    if declined:
        return f": {declined}"
    return f" within roundTimeoutSeconds={spec.round_timeout_seconds:g}"


def round_failed(
    spec: JobSpec, number: int, quorum: int, connected: list[str], attempts: int, declined: str = ""
) -> str:
    """Why the job ends: a round that never reached its quorum (``declined``: the sites that
    declined its last attempt, and why, when they left too few)."""
    needed = (
        f"minSitesPerRound={spec.min_sites_per_round}"
        if quorum == spec.min_sites_per_round
        else f"the secure-aggregation threshold of {quorum} sites"
    )
    return (
        f"round {number} did not reach {needed} in {attempts} attempts"
        f"{why_short(spec, declined)}; connected sites: {', '.join(connected) or 'none'}"
    )
