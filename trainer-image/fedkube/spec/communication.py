"""How updates and models travel: the codec of each direction (the job author's choice)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedkube.spec.base import _Model


class CodecSpec(_Model):
    codec: Literal["none", "int8", "topk", "topk_int8"] = Field(
        default="none",
        description="none: float32 as it is; int8: one byte a value, a scale per block, "
        "stochastic rounding (unbiased); topk: each tensor's largest values and their "
        "positions, the rest kept at the site for later rounds (error feedback); topk_int8: "
        "the same with the values in int8.",
    )
    fraction: float = Field(
        default=0.01, gt=0, le=1, description="topk: the share of each tensor's values sent."
    )
    block_size: int = Field(
        default=4096, ge=16, le=1 << 20, description="int8: values that share one scale."
    )


class CommunicationSpec(_Model):
    uplink: CodecSpec = Field(
        default_factory=CodecSpec, description="How each site's update travels."
    )
    downlink: CodecSpec = Field(
        default_factory=CodecSpec,
        description="How the global model travels: with a codec, as the change since the "
        "model the site holds (what the codec leaves out follows in later rounds); a site "
        "that holds none, and every site after the last round, gets the whole model.",
    )
