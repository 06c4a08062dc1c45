"""The coordinator's state through checkpoints: written after each round, read at start, so
a restarted aggregator resumes where the last one stopped."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from fedkube.aggregator.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedkube.aggregator.privacy_hook import PrivacyHook
from fedkube.aggregator.round_log import RoundLog
from fedkube.aggregator.rounds import SiteState
from fedkube.errors import JobFailed
from fedkube.spec.job import FederatedJob, JobSpec
from fedkube.spec.preprocessing import Preprocessing
from fedkube.spec.progress import RoundRecord, SiteSummary
from fedkube.spec.statistics import StatisticsReport
from fedkube.strategy.base import Strategy
from fedkube.wire.tensors import Params, TensorInfo, specs_of

log = logging.getLogger("fedkube.aggregator")


class Checkpointed(Protocol):
    """The engine's state that outlives its process."""

    job: FederatedJob
    spec: JobSpec
    checkpoint_dir: Path | None
    infos: list[TensorInfo]
    params: Params
    strategy: Strategy
    privacy: PrivacyHook
    rounds_completed: int
    restarts: int
    preprocessing: Preprocessing | None
    statistics: StatisticsReport | None
    log: RoundLog
    sites: dict[str, SiteState]

    @property
    def history(self) -> list[RoundRecord]: ...


def resume(c: Checkpointed) -> bool:
    """Load the job's checkpoint into ``c``; whether there was one."""
    if c.checkpoint_dir is None:
        return False
    cp = load_checkpoint(c.checkpoint_dir, c.job.name, c.spec.training_fingerprint())
    if cp is None:
        return False
    # safetensors lists tensors by name; the wire order is the model's own.
    stored = {i.name: i for i in specs_of(cp.params)}
    if stored != {i.name: i for i in c.infos}:
        raise JobFailed(f"the checkpoint in {c.checkpoint_dir} holds a model of another shape")
    c.params = {i.name: cp.params[i.name] for i in c.infos}
    c.strategy.load_state(cp.strategy_arrays, cp.strategy_meta)
    c.privacy.load(cp.privacy)
    c.rounds_completed = cp.rounds_completed
    c.restarts = cp.restarts + 1
    if cp.preprocessing is not None:
        c.preprocessing = Preprocessing.model_validate(cp.preprocessing)
    if cp.statistics is not None:
        c.statistics = StatisticsReport.model_validate(cp.statistics)
    c.log.history = [RoundRecord.model_validate(h) for h in cp.history]
    for name, s in cp.sites.items():
        if name in c.sites:
            summary = SiteSummary.model_validate(s)
            c.sites[name].last_round = summary.last_round
            c.sites[name].samples = summary.samples
    log.info("resumed from checkpoint after round %d", c.rounds_completed)
    return True


def save(c: Checkpointed) -> None:
    if c.checkpoint_dir is None:
        return  # the simulation keeps none
    save_checkpoint(
        c.checkpoint_dir,
        Checkpoint(
            job=c.job.name,
            fingerprint=c.spec.training_fingerprint(),
            rounds_completed=c.rounds_completed,
            params=c.params,
            strategy_arrays=c.strategy.state_arrays(),
            strategy_meta=c.strategy.state_meta(),
            history=[h.to_json_dict() for h in c.history],
            sites={n: s.summary().to_json_dict() for n, s in c.sites.items()},
            privacy=c.privacy.state(),
            restarts=c.restarts,
            preprocessing=(
                c.preprocessing.model_dump(mode="json", by_alias=True) if c.preprocessing else None
            ),
            statistics=c.statistics.to_json_dict() if c.statistics else None,
        ),
    )
