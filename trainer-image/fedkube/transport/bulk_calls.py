"""The two bulk calls of the ``Aggregator`` service as a site makes them: a download's chunks
read in place, an update's chunks sent as frames encoded once (``fedkube.wire.chunk_frames``).
The same calls and bytes as the generated stub's; for a sync or an asyncio channel alike."""

from __future__ import annotations

from typing import Any

from fedkube.proto import fedkube_pb2 as pb
from fedkube.wire.chunk_frames import decode_model_part, encode_part

GET_MODEL = "/fedkube.v1.Aggregator/GetModel"
SUBMIT_UPDATE = "/fedkube.v1.Aggregator/SubmitUpdate"


def get_model(channel: Any) -> Any:
    """``GetModel``: its stream yields ``pb.ModelPart`` (the header) and ``ChunkPart``."""
    return channel.unary_stream(
        GET_MODEL,
        request_serializer=pb.ModelRequest.SerializeToString,
        response_deserializer=decode_model_part,
    )


def submit_update(channel: Any) -> Any:
    """``SubmitUpdate``: takes ``pb.UpdatePart`` messages and frames (bytes) alike."""
    return channel.stream_unary(
        SUBMIT_UPDATE,
        request_serializer=encode_part,
        response_deserializer=pb.Receipt.FromString,
    )
