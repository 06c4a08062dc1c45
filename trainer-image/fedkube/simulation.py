"""Every site in one process: the round engine over in-process links.

The same ``Coordinator`` as the aggregator (quorum, secure aggregation, DP accounting,
strategies, robust aggregation) and the same ``TrainerClient`` and ``LocalTrainer`` as the
trainer processes; only the transport differs (``InProcessLink``: no sockets, no
serialisation). The coordinator runs on an event loop in one thread and each site in a
thread of its own. For benchmarks that rerun a setting many times and tests of what a
strategy converges to. It is no privacy boundary: all data is in one process, which is why
`fedkube run` and the operator never use it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedkube.aggregator.coordinator import Coordinator
from fedkube.data.site_data import SiteData
from fedkube.errors import JobFailed
from fedkube.models.plugins import PluginPolicy
from fedkube.models.registry import initial_params
from fedkube.spec.job import FederatedJob
from fedkube.spec.preprocessing import Preprocessing
from fedkube.spec.progress import RoundRecord
from fedkube.spec.statistics import StatisticsReport
from fedkube.strategy import build_strategy
from fedkube.trainer.local import LocalTrainer
from fedkube.trainer.site import PendingSite, prepare_site, site_client, site_trainer
from fedkube.transport.inprocess import InProcessLink
from fedkube.wire.tensors import Params

# A site's update on its way out: (site, update) -> what is sent instead.
Tamper = Callable[[str, Params], Params]


@dataclass
class SimulationResult:
    params: Params
    history: list[RoundRecord] = field(default_factory=list)
    # Each site's scores of the final model (and its personal one), as it reported them.
    sites: dict[str, dict[str, float]] = field(default_factory=dict)
    # Round 0's outcome, when the job ran it.
    statistics: StatisticsReport | None = None
    preprocessing: Preprocessing | None = None


class TamperedTrainer(LocalTrainer):
    """A broken or hostile site: trains honestly, then sends what ``tamper`` makes of it."""

    tamper: Tamper

    def train(self, *args: Any, **kwargs: Any) -> tuple[Params, dict[str, float]]:
        update, metrics = super().train(*args, **kwargs)
        return self.tamper(self.site, update), metrics


def with_evaluation_every(job: FederatedJob, rounds: int) -> FederatedJob:
    evaluation = job.spec.evaluation.model_copy(update={"every_rounds": rounds})
    spec = job.spec.model_copy(update={"evaluation": evaluation})
    return job.model_copy(update={"spec": spec})


def simulate(
    job: FederatedJob,
    manifest: Path | None = None,
    *,
    evaluate_every: int | None = None,
    tamper: Tamper | None = None,
    statistics_only: bool = False,
) -> SimulationResult:
    """Run the job's rounds in this process; ``tamper(site, update)`` stands for a broken or
    hostile site (benchmarks of robust aggregation). Raises JobFailed as the aggregator would."""
    if evaluate_every is not None:
        job = with_evaluation_every(job, evaluate_every)
    spec = job.spec
    plugins = PluginPolicy.for_local(spec.task, manifest.resolve().parent if manifest else None)
    trainers = {
        s.name: _trainer(job, s.name, manifest, tamper, plugins) for s in spec.sites if not s.remote
    }
    features, classes = spec.input_shape()
    coordinator = Coordinator(
        job,
        initial_params(spec.task, features, classes, plugins),
        build_strategy(spec),
        None,
        statistics_only=statistics_only,
    )
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, name="coordinator", daemon=True)
    loop_thread.start()
    errors: list[BaseException] = []
    stopped = threading.Event()
    try:
        running = asyncio.run_coroutine_threadsafe(coordinator.run(), loop)
        sites = [
            threading.Thread(
                target=_serve_site,
                args=(job, name, trainer, InProcessLink(coordinator, loop, stopped)),
                kwargs={"errors": errors, "running": running},
                name=f"site {name}",
                daemon=True,
            )
            for name, trainer in trainers.items()
        ]
        for t in sites:
            t.start()
        try:
            running.result()
        except CancelledError:
            if not errors:
                raise
        finally:
            stopped.set()
            asyncio.run_coroutine_threadsafe(_release_sites(coordinator), loop).result()
            for t in sites:
                t.join()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join()
        loop.close()
    if errors:
        raise errors[0]
    return SimulationResult(
        params=coordinator.params,
        history=coordinator.history,
        sites={n: dict(s.metrics) for n, s in coordinator.sites.items()},
        statistics=coordinator.statistics,
        preprocessing=coordinator.preprocessing,
    )


def _trainer(
    job: FederatedJob,
    site: str,
    manifest: Path | None,
    tamper: Tamper | None,
    plugins: PluginPolicy,
) -> PendingSite:
    def make(data: SiteData) -> LocalTrainer:
        kind = LocalTrainer if tamper is None else TamperedTrainer
        trainer = site_trainer(job, site, data, kind=kind, plugins=plugins)
        if isinstance(trainer, TamperedTrainer) and tamper is not None:
            trainer.tamper = tamper
        return trainer

    return prepare_site(job, site, manifest, make)


async def _release_sites(coordinator: Coordinator) -> None:
    """End every site's stream, so no site thread waits on a job that is over, and let a
    cancelled round loop finish unwinding before the loop stops."""
    for s in coordinator.sites.values():
        if s.queue is not None:
            s.queue.put_nowait(None)
    others = asyncio.all_tasks() - {asyncio.current_task()}
    await asyncio.gather(*others, return_exceptions=True)


def _serve_site(
    job: FederatedJob,
    site: str,
    trainer: LocalTrainer | PendingSite,
    link: InProcessLink,
    *,
    errors: list[BaseException],
    running: Future[None],
) -> None:
    """One site's thread: serve tasks until the job ends; an error stops the whole job."""
    try:
        site_client(job, site, link, trainer).run()
    except JobFailed:
        pass  # the job ended (the coordinator's own failure is raised from running.result())
    except BaseException as e:
        errors.append(e)
        running.cancel()
