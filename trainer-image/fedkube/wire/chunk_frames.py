"""The bulk messages (a model's or an update's chunks) framed and read without protobuf's
copies: the same bytes on the wire, a third of the work.

A ``ModelPart`` or ``UpdatePart`` that carries a chunk is, in protobuf's encoding, field 2
(the chunk) holding fields 1 (tensor), 2 (offset) and 3 (data). Built through protobuf's
message classes, a 1 MiB chunk is copied three times before gRPC sees it (``tobytes``, the
field assignment, ``SerializeToString``) and twice after it arrives (the parse, then the
``data`` accessor, which copies on every access under upb); at gRPC's own speed those copies
cost more than the transfer. ``encode_chunk_part`` writes the frame with one copy;
``decode_part`` reads one with none (its ``data`` is a view of the bytes gRPC delivered).

The encoding is protobuf's own, byte for byte (fields in number order, defaults omitted), so
either side may be any protobuf implementation. ``decode_part`` takes the fast path only for
a frame in exactly that form, and hands anything else (a header, a field repeated or out of
order, an unknown field, a value protobuf would truncate) to protobuf's parser: the message
a reader gets means what protobuf says it means.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from fedkube.proto import fedkube_pb2 as pb

_CHUNK_FIELD = 0x12  # field 2, length-delimited: the part's ``chunk``
_TENSOR, _OFFSET, _DATA = 0x08, 0x10, 0x1A  # TensorChunk's fields 1, 2 (varints), 3 (bytes)
_UINT32_MAX, _UINT64_MAX = (1 << 32) - 1, (1 << 64) - 1


class Chunk(Protocol):
    """What a chunk's readers use: a ``pb.TensorChunk`` or a ``ChunkView``."""

    @property
    def tensor(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def data(self) -> bytes | memoryview: ...


class ChunkView:
    """A chunk read in place: ``data`` is a view of the received frame."""

    __slots__ = ("data", "offset", "tensor")

    def __init__(self, tensor: int, offset: int, data: memoryview) -> None:
        self.tensor, self.offset, self.data = tensor, offset, data


class ChunkPart:
    """A ``ModelPart`` or ``UpdatePart`` holding a chunk, read in place: the accessors its
    readers use of the protobuf message."""

    __slots__ = ("_size", "chunk")

    def __init__(self, chunk: ChunkView, size: int) -> None:
        self.chunk, self._size = chunk, size

    def HasField(self, name: str) -> bool:  # protobuf's name
        return name == "chunk"

    def ByteSize(self) -> int:  # protobuf's name
        return self._size


Part = TypeVar("Part", pb.UpdatePart, pb.ModelPart)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_chunk_part(tensor: int, offset: int, data: bytes | memoryview) -> bytes:
    """The serialized ``ModelPart``/``UpdatePart`` holding ``TensorChunk(tensor, offset,
    data)``, as protobuf writes it, with one copy of ``data``."""
    inner = b""
    if tensor:
        inner += bytes((_TENSOR,)) + _varint(tensor)
    if offset:
        inner += bytes((_OFFSET,)) + _varint(offset)
    size = len(data)  # a memoryview of bytes: its length is its byte count
    if size:
        inner += bytes((_DATA,)) + _varint(size)
    head = bytes((_CHUNK_FIELD,)) + _varint(len(inner) + size) + inner
    return b"".join((head, data)) if size else head


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """A varint in its shortest form (protobuf's own), or None: a longer form of the same
    value (a last byte of 0) is left to protobuf, which refuses some of them (a length in
    more than 5 bytes) and would read differently from the fast path (found by fuzzing)."""
    value = shift = 0
    while pos < end and shift < 70:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value, pos) if byte or not shift else None
        shift += 7
    return None


def _read_chunk(buf: bytes) -> ChunkPart | None:
    """The fast path: a frame in protobuf's own form of a chunk part, or None."""
    end = len(buf)
    if end < 2 or buf[0] != _CHUNK_FIELD:
        return None
    got = _read_varint(buf, 1, end)
    if got is None or got[1] + got[0] != end:
        return None
    pos = got[1]
    tensor = offset = 0
    data = memoryview(b"")
    if pos < end and buf[pos] == _TENSOR:
        got = _read_varint(buf, pos + 1, end)
        if got is None or got[0] > _UINT32_MAX:
            return None
        tensor, pos = got
    if pos < end and buf[pos] == _OFFSET:
        got = _read_varint(buf, pos + 1, end)
        if got is None or got[0] > _UINT64_MAX:
            return None
        offset, pos = got
    if pos < end and buf[pos] == _DATA:
        got = _read_varint(buf, pos + 1, end)
        if got is None or got[1] + got[0] != end:
            return None
        data, pos = memoryview(buf)[got[1] :], end
    if pos != end:
        return None
    return ChunkPart(ChunkView(tensor, offset, data), end)


def decode_part(kind: type[Part], buf: bytes) -> Part | ChunkPart:
    """A received ``kind`` frame: a ``ChunkPart`` for a chunk in protobuf's own form, else
    the message protobuf parses (a header; any other form). DecodeError as protobuf's."""
    return _read_chunk(buf) or kind.FromString(buf)


def decode_update_part(buf: bytes) -> pb.UpdatePart | ChunkPart:
    return decode_part(pb.UpdatePart, buf)


def decode_model_part(buf: bytes) -> pb.ModelPart | ChunkPart:
    return decode_part(pb.ModelPart, buf)


def encode_part(message: pb.UpdatePart | pb.ModelPart | bytes) -> bytes:
    """A serializer for gRPC that takes frames already encoded as they are."""
    return message if isinstance(message, bytes) else message.SerializeToString()
