"""The secure-aggregation parameters of a job, derived from its manifest alone.

The aggregator puts them in every secure task; each site derives them from its own copy of
the manifest and refuses a task whose parameters differ, so an aggregator cannot lower the
threshold, the clip or the noise on its own."""

from __future__ import annotations

import math

from fedkube.proto import fedkube_pb2 as pb
from fedkube.spec.job import JobSpec


def secagg_params(spec: JobSpec) -> pb.SecAggParams | None:
    secure = spec.security.secure_aggregation
    if secure is None:
        return None
    threshold = secure.threshold_for(len(spec.sites))
    params = pb.SecAggParams(threshold=threshold, clip_range=secure.clip_range)
    dp = spec.privacy.update_level
    if dp is not None:
        # DP-FedAvg with the noise shared among the sites: each clips its update and adds
        # 1/threshold of the noise variance, so any quorum's sum carries at least the full
        # noise of the aggregator-side mechanism (z * C), whoever drops.
        params.clip_norm = dp.clip_norm
        params.noise_stddev = dp.noise_multiplier * dp.clip_norm / math.sqrt(threshold)
        params.equal_weights = True
        # A fixed, public denominator: each update weighs 1/(the job's sites), whoever
        # answers, so one site's influence on the sum is bounded by the noise's design.
        params.num_sites = len(spec.sites)
    elif spec.security.weighting == "equal":
        # Each survivor's update weighs the same, whatever it advertises.
        params.equal_weights = True
        params.num_sites = len(spec.sites)
    return params
