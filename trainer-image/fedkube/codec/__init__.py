"""Update codecs: how a site's update travels, smaller, and how the aggregator folds it back
a chunk at a time. One file per codec, behind ``Codec`` (``base.py``)."""

from fedkube.codec.base import Codec, build_codec

__all__ = ["Codec", "build_codec"]
