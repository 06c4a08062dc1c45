"""A site's report of its held-out scores, checked and folded into the job's record.

In a plain job a site sends its figures. In a private job (secure aggregation or differential
privacy) no site's own figures may reach the aggregator: under secure aggregation its counts
ride masked with its update (``secure_rounds``), and under differential privacy alone it sends
noised counts (``evaluation.noiseMultiplier``) or says it withheld them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from fedkube.errors import InvalidUpdate
from fedkube.proto import fedkube_pb2 as pb

if TYPE_CHECKING:
    from fedkube.aggregator.coordinator import Coordinator


# What a site may say of itself in a private job: its record-level epsilon, which follows
# from the manifest and its row count (known to the aggregator already).
PRIVATE_JOB_FIGURES = frozenset({"epsilon"})


def take_evaluation(c: Coordinator, msg: pb.Evaluation) -> dict[str, float] | None:
    """Record the report; what the site said of itself (its figures in a plain job)."""
    site, number = msg.ref.site, msg.ref.round
    if c.private:
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
        if len(msg.counts) != c.score_layout.size:
            raise InvalidUpdate(
                f"evaluation has {len(msg.counts)} counts; this job's layout has "
                f"{c.score_layout.size}",
                site=site,
                round=number,
            )
        c.log.record_counts(msg.model_version, site, np.array(msg.counts, dtype=np.int64))
        return own
    metrics = dict(msg.metrics)
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad or msg.num_samples <= 0:
        raise InvalidUpdate(
            f"evaluation has non-finite metrics {bad} or no samples", site=site, round=number
        )
    c.log.record_evaluation(msg.model_version, site, msg.num_samples, metrics)
    return metrics
