"""Update codecs: how a site's update travels, smaller, and how the aggregator folds it back
a chunk at a time. One file per codec, behind ``Codec`` (``base.py``); ``build_codec`` picks
one from the manifest (here, so that no codec's module imports the others)."""

from fedkube.codec.base import Codec
from fedkube.codec.int8 import Int8
from fedkube.codec.topk import TopK
from fedkube.spec.communication import CodecSpec


def build_codec(spec: CodecSpec) -> Codec | None:
    if spec.codec == "none":
        return None
    if spec.codec == "int8":
        return Int8(spec.block_size)
    return TopK(spec.fraction, quantise=spec.codec == "topk_int8")


__all__ = ["Codec", "build_codec"]
