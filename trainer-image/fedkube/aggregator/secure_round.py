"""What the coordinator needs to run a round under secure aggregation: the parameters every
site is told, the shape masked updates arrive in, and the unmasked mean as model tensors."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.server import SecureSum
from fedkube.spec.job import JobSpec
from fedkube.wire.tensors import Params, TensorInfo

MASKED_CODEC = "secagg"


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
    return params


def masked_infos(infos: Sequence[TensorInfo]) -> list[TensorInfo]:
    """Masked updates carry one uint32 per value, in the update's own tensor layout."""
    return [TensorInfo(i.name, np.dtype("<u4"), i.shape) for i in infos]


def unmasked_mean(secure: SecureSum, infos: Sequence[TensorInfo]) -> Params:
    flat, _ = secure.unmask()
    return {
        i.name: values.astype(i.dtype).reshape(i.shape)
        for i, values in zip(infos, flat, strict=True)
    }
