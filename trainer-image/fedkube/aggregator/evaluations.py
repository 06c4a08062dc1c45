"""The sites' evaluations: each report checked and folded into the job's record, and the
final evaluation after the last round.

In a plain job a site sends its figures. In a private job (secure aggregation or differential
privacy) no site's own figures may reach the aggregator: under secure aggregation its counts
ride masked with its update (``secure_rounds``), and under differential privacy alone it sends
noised counts (``evaluation.noiseMultiplier``) or says it withheld them."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fedkube.aggregator.figures import figure_problems
from fedkube.aggregator.round_host import RoundHost
from fedkube.aggregator.round_log import RoundLog
from fedkube.aggregator.sample_bounds import SampleBounds
from fedkube.aggregator.secure_rounds import SecureRounds
from fedkube.errors import InvalidUpdate
from fedkube.proto import fedkube_pb2 as pb
from fedkube.spec.job import JobSpec
from fedkube.stats.score_counts import ScoreLayout, count_bounds

# What a site may say of itself in a private job: its record-level epsilon, which follows
# from the manifest and its row count (known to the aggregator already).
PRIVATE_JOB_FIGURES = frozenset({"epsilon"})


def held_out_noise(spec: JobSpec) -> tuple[float, float] | None:
    """evaluation.noiseMultiplier, and the delta the held-out epsilon is told at."""
    noise = spec.evaluation.noise_multiplier
    dp = spec.privacy.update_level or spec.privacy.record_level
    return (noise, dp.delta if dp else 1e-5) if noise is not None else None


class EvaluationHost(RoundHost, Protocol):
    """What the evaluations use of the round engine: the model version, the record, the
    bounds on what a site may claim, and secure aggregation's stages."""

    rounds_completed: int
    log: RoundLog
    sample_bounds: SampleBounds
    secure: SecureRounds | None


class Evaluations:
    def __init__(self, host: EvaluationHost) -> None:
        self.c = host
        spec = host.spec
        # A private job, or one that asks for noised scores: no site's own evaluation figures
        # reach this process (counts only).
        self.private = (
            host.secure is not None
            or spec.privacy.update_level is not None
            or spec.privacy.record_level is not None
            or spec.evaluation.noise_multiplier is not None
        )
        self.layout = ScoreLayout(personal=spec.personalization.method != "none")

    def report(self, msg: pb.Evaluation) -> None:
        c = self.c
        site = c.known(msg.ref.job, msg.ref.site)
        if msg.model_version > c.rounds_completed or msg.model_version < 0:
            raise InvalidUpdate(
                f"evaluation names model version {msg.model_version}, which does not exist",
                site=msg.ref.site,
                round=msg.ref.round,
            )
        taken = self._take(msg)
        if msg.model_version == c.rounds_completed and taken is not None:
            site.metrics, site.eval_samples = taken, msg.num_samples
        r = c.open
        if r is not None and r.stage == pb.EVALUATE and msg.model_version == r.model_version:
            r.done[msg.ref.site] = taken or {}
            r.samples[msg.ref.site] = msg.num_samples
        c.notify()

    async def final(self) -> None:
        """Every site scores the last model: in a secure job a secure round of counts, else
        a stage that waits for every connected site's report or the deadline."""
        c = self.c
        if c.secure is not None:
            await c.secure.final_evaluation()
            return
        r = c.open_round(c.rounds_completed, pb.EVALUATE, c.rounds_completed)
        await c.stage_answered(r, 0)
        c.log.finalize(c.rounds_completed)
        c.open = None

    def _take(self, msg: pb.Evaluation) -> dict[str, float] | None:
        """Record the report; what the site said of itself (its figures in a plain job)."""
        c, site, number = self.c, msg.ref.site, msg.ref.round
        if not self.private:
            metrics = dict(msg.metrics)
            bad = figure_problems(metrics)
            if bad or msg.num_samples <= 0:
                raise InvalidUpdate(
                    f"evaluation has metrics out of range ({'; '.join(bad)}) or no samples",
                    site=site,
                    round=number,
                )
            c.sample_bounds.check(site, msg.num_samples, "the evaluation", number)
            c.log.record_evaluation(msg.model_version, site, msg.num_samples, metrics)
            return metrics
        own = dict(msg.metrics)
        if set(own) - PRIVATE_JOB_FIGURES or msg.num_samples:
            raise InvalidUpdate(
                "an evaluation with the site's own figures in a private job; a site of this job "
                "sends counts or nothing (is it running the same manifest and release?)",
                site=site,
                round=number,
            )
        if msg.withheld:
            c.log.record_counts(msg.model_version, site, None)
            return own
        if c.secure is not None or c.spec.evaluation.noise_multiplier is None:
            raise InvalidUpdate(
                "evaluation counts outside secure aggregation in a job without "
                "evaluation.noiseMultiplier",
                site=site,
                round=number,
            )
        if len(msg.counts) != self.layout.size:
            raise InvalidUpdate(
                f"evaluation has {len(msg.counts)} counts; this job's layout has "
                f"{self.layout.size}",
                site=site,
                round=number,
            )
        counts = np.array(msg.counts, dtype=np.int64)
        rows, why = c.sample_bounds.bound(site)
        lo, hi = count_bounds(counts.size, rows, c.spec.evaluation.noise_multiplier)
        outside = np.flatnonzero((counts < lo) | (counts > hi))
        if outside.size:
            i = int(outside[0])
            raise InvalidUpdate(
                f"evaluation count {i} is {int(counts[i])}, outside what at most {rows} held-out "
                f"records ({why}) and the noise can give ({lo[i]:.0f} to {hi[i]:.0f})",
                site=site,
                round=number,
            )
        c.log.record_counts(msg.model_version, site, counts)
        return own
