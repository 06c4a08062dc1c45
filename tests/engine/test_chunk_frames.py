"""The bulk messages framed and read without protobuf's copies: byte for byte protobuf's own
encoding, read back the same, and anything not in that exact form left to protobuf."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedkube.proto import fedkube_pb2 as pb
from fedkube.storage.safetensors_file import read_safetensors, write_safetensors
from fedkube.wire.chunk_frames import ChunkPart, decode_part, encode_chunk_part, encode_part
from fedkube.wire.tensors import chunk_frames, sized_parts
from google.protobuf.message import DecodeError

CASES = [
    (0, 0, b""),
    (0, 0, b"\x00"),
    (1, 0, b"abc"),
    (0, 1 << 20, b"x" * 1000),
    (7, (1 << 40) + 3, bytes(range(256)) * 4),
    ((1 << 32) - 1, (1 << 64) - 1, b"\xff" * 130),  # the largest each field holds
]


@pytest.mark.parametrize("kind", [pb.UpdatePart, pb.ModelPart])
@pytest.mark.parametrize(("tensor", "offset", "data"), CASES)
def test_a_frame_is_protobufs_own_encoding_and_reads_back(
    kind: type[pb.UpdatePart], tensor: int, offset: int, data: bytes
) -> None:
    frame = encode_chunk_part(tensor, offset, memoryview(data))
    ours = kind(chunk=pb.TensorChunk(tensor=tensor, offset=offset, data=data))
    assert frame == ours.SerializeToString()
    read = decode_part(kind, frame)
    assert isinstance(read, ChunkPart) and read.HasField("chunk") and not read.HasField("header")
    assert (read.chunk.tensor, read.chunk.offset, bytes(read.chunk.data)) == (tensor, offset, data)
    assert read.ByteSize() == len(frame)


def test_the_arrays_frames_equal_the_messages_protobuf_builds() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((300, 1000)).astype(np.float32), np.arange(5.0)]
    frames = list(chunk_frames(arrays))
    messages = list(sized_parts(pb.ModelPart, arrays))
    assert [n for _, n in frames] == [n for _, n in messages]
    assert [f for f, _ in frames] == [m.SerializeToString() for m, _ in messages]


def test_a_header_or_any_other_form_is_left_to_protobuf() -> None:
    header = pb.UpdatePart(header=pb.UpdateHeader(num_samples=3)).SerializeToString()
    assert isinstance(decode_part(pb.UpdatePart, header), pb.UpdatePart)
    chunk = encode_chunk_part(2, 8, b"abcd")
    inner = pb.TensorChunk(tensor=2, offset=8, data=b"abcd").SerializeToString()
    others = {
        # Fields out of number order: valid protobuf, not protobuf's own form.
        "fields reordered": b"\x12" + bytes([len(inner)]) + inner[2:] + inner[:2],
        # A chunk sent twice: protobuf merges the two (last value of each field wins).
        "chunk repeated": chunk + encode_chunk_part(3, 0, b"zz"),
        # A field this version does not know (field 9, a varint).
        "unknown field": b"\x12" + bytes([len(inner) + 2]) + inner + b"\x48\x01",
        # A tensor index past 32 bits, which protobuf truncates.
        "tensor past uint32": b"\x12\x09\x08\x80\x80\x80\x80\x10\x1a\x01q",
        # Varints longer than they need be, which protobuf reads: a tensor index of 2 in
        # two bytes, a frame length in three.
        "long tensor index": b"\x12\x05\x08\x82\x00\x10\x01",
        "long frame length": b"\x12\x84\x80\x00\x08\x02\x10\x01",
    }
    for why, frame in others.items():
        read = decode_part(pb.UpdatePart, frame)
        assert isinstance(read, pb.UpdatePart), why
        assert read == pb.UpdatePart.FromString(frame), why


@pytest.mark.parametrize(
    "frame",
    [
        encode_chunk_part(1, 2, b"abcdef")[:-1],  # cut short
        b"\x12\x05\x08\x01",  # a length past the end
        b"\x12\x80",  # a varint never ended
        # A frame length of 0 in 6 bytes: protobuf refuses a length past 5 (found by fuzzing).
        b"\x12\x80\x80\x80\x80\x80\x00",
    ],
)
def test_a_broken_frame_is_protobufs_decode_error(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_part(pb.UpdatePart, frame)


def test_the_serializer_takes_messages_and_frames() -> None:
    header = pb.ModelPart(header=pb.ModelHeader(model_version=4))
    assert encode_part(header) == header.SerializeToString()
    frame = encode_chunk_part(0, 0, b"ab")
    assert encode_part(frame) is frame


def test_safetensors_read_back_in_written_order(tmp_path: Path) -> None:
    """The library lists names sorted; a model's tensors travel in the model's order."""
    arrays = {name: np.full(3, i, np.float32) for i, name in enumerate(["z.w", "a.b", "m"])}
    write_safetensors(tmp_path / "m.safetensors", arrays)
    read, _ = read_safetensors(tmp_path / "m.safetensors")
    assert list(read) == ["z.w", "a.b", "m"]
    assert all(np.array_equal(read[k], v) for k, v in arrays.items())
