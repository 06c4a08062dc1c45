"""Every site in one process, without gRPC: the in-memory twin of `fedkube run`.

The same strategies (``fedkube.strategy``) and the same site training (``LocalTrainer``) as
the real processes, driven in a loop; for benchmarks that rerun a setting many times, and for
tests of what a strategy converges to. It is not a privacy boundary: all data is in one
process, which is why `fedkube run` and the operator never use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedkube.data.site_data import load_site_data
from fedkube.models.registry import initial_params
from fedkube.privacy.adaptive_clip import AdaptiveClip
from fedkube.spec.job import FederatedJob
from fedkube.strategy import ArrayUpdate, DpFedAvgAccumulator, build_accumulator, build_strategy
from fedkube.trainer.local import LocalTrainer
from fedkube.wire.tensors import Params, specs_of


@dataclass
class SimulationResult:
    params: Params
    history: list[dict[str, Any]] = field(default_factory=list)
    sites: dict[str, dict[str, float]] = field(default_factory=dict)


def weighted_eval(
    trainers: dict[str, LocalTrainer], params: Params
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    per_site = {name: t.evaluate(params) for name, t in trainers.items()}
    sizes = {name: t.held_out_size() for name, t in trainers.items()}
    total = sum(sizes.values())
    overall = {
        key: sum(sizes[n] * m[key] for n, m in per_site.items()) / total
        for key in ("loss", "accuracy")
    }
    return per_site, overall


def simulate(
    job: FederatedJob,
    manifest: Path | None = None,
    *,
    evaluate_every: int | None = None,
    on_round: Callable[[dict[str, Any]], bool | None] | None = None,
    tamper: Callable[[str, Params], Params] | None = None,
) -> SimulationResult:
    """Run the job's rounds in this process. ``on_round`` sees each round's record and may
    return True to stop early; ``tamper(site, update)`` stands for a broken or hostile site
    (benchmarks of robust aggregation)."""
    spec = job.spec
    features, classes = spec.input_shape()
    params = initial_params(spec.task, features, classes)
    strategy = build_strategy(spec)
    trainers = {
        s.name: LocalTrainer(
            spec.task,
            load_site_data(spec, s.name, manifest),
            s.name,
            spec.personalization,
            spec.privacy,
        )
        for s in spec.sites
        if not s.remote
    }
    infos = specs_of(params)
    update_infos = infos + strategy.update_extras(infos)
    every = evaluate_every or spec.evaluation.every_rounds
    result = SimulationResult(params)
    clip = AdaptiveClip.for_job(spec)
    for r in range(1, spec.rounds + 1):
        sent = {**params, **strategy.broadcast_arrays()}
        accumulator = build_accumulator(spec, strategy, update_infos, clip)
        received = 0
        for name, trainer in trainers.items():
            model, extras = trainer.split(sent)
            update, _ = trainer.train(model, r, strategy.client_config(r), extras)
            if tamper is not None:
                update = tamper(name, update)
            received += sum(a.nbytes for a in update.values())
            accumulator.add(ArrayUpdate(update_infos, update, trainer.num_train))
        params = strategy.apply(params, accumulator.mean(), r, participants=len(trainers))
        record: dict[str, Any] = {
            "round": r,
            "bytes": received + sum(a.nbytes for a in sent.values()) * len(trainers),
        }
        if clip is not None and isinstance(accumulator, DpFedAvgAccumulator):
            record["clipNorm"] = clip.clip_norm
            clip.observe(accumulator.unclipped, accumulator.count)
        if r % every == 0 or r == spec.rounds:
            _, overall = weighted_eval(trainers, params)
            record.update(overall)
        result.history.append(record)
        if on_round is not None and on_round(record):
            break
    result.params = params
    result.sites, _ = weighted_eval(trainers, params)
    return result
