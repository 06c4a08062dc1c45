"""Tensors on the wire: raw little-endian bytes described by name, dtype and shape.

A model (or an update) is an ordered list of named numpy arrays. Senders cut the
concatenated bytes into chunks of ``CHUNK_BYTES``; receivers check each chunk's tensor
index, offset and length against the header before using it. Nothing here is pickled.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedkube.proto import fedkube_pb2 as pb
from fedkube.wire.chunk_frames import Chunk, Part, encode_chunk_part

# Well under gRPC's 4 MiB default message limit, whatever the model size; a multiple of
# 8 so that chunk boundaries never split an element.
CHUNK_BYTES = 1 << 20

Params = dict[str, np.ndarray]

_TO_WIRE: dict[np.dtype[np.generic], pb.DType] = {
    np.dtype("<f4"): pb.FLOAT32,
    np.dtype("<f8"): pb.FLOAT64,
    np.dtype("<f2"): pb.FLOAT16,
    np.dtype("<i8"): pb.INT64,
    np.dtype("<i4"): pb.INT32,
    np.dtype("u1"): pb.UINT8,
    np.dtype("i1"): pb.INT8,
    np.dtype("<u4"): pb.UINT32,
}
_FROM_WIRE = {v: k for k, v in _TO_WIRE.items()}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: np.dtype[np.generic]
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


def info_of(name: str, array: np.ndarray) -> TensorInfo:
    return TensorInfo(name, np.dtype(array.dtype).newbyteorder("<"), tuple(array.shape))


def to_spec(info: TensorInfo) -> pb.TensorSpec:
    if info.dtype not in _TO_WIRE:
        raise ValueError(f"tensor {info.name!r}: dtype {info.dtype} cannot travel on the wire")
    return pb.TensorSpec(name=info.name, dtype=_TO_WIRE[info.dtype], shape=list(info.shape))


def from_spec(spec: pb.TensorSpec) -> TensorInfo:
    """Raises ValueError naming the tensor when the spec is unusable."""
    if spec.dtype not in _FROM_WIRE:
        raise ValueError(f"tensor {spec.name!r}: unknown dtype code {spec.dtype}")
    if any(d < 0 for d in spec.shape):
        raise ValueError(f"tensor {spec.name!r}: negative dimension in shape {list(spec.shape)}")
    return TensorInfo(spec.name, _FROM_WIRE[spec.dtype], tuple(int(d) for d in spec.shape))


def specs_of(params: Mapping[str, np.ndarray]) -> list[TensorInfo]:
    return [info_of(name, arr) for name, arr in params.items()]


def iter_chunks(
    arrays: Sequence[np.ndarray], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[pb.TensorChunk]:
    """Cut each array's little-endian bytes into chunks, copying one chunk at a time."""
    for index, array in enumerate(arrays):
        flat = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
        raw = flat.reshape(-1).view(np.uint8).data
        for offset in range(0, len(raw), chunk_bytes):
            yield pb.TensorChunk(
                tensor=index, offset=offset, data=bytes(raw[offset : offset + chunk_bytes])
            )


def byte_pieces(
    arrays: Sequence[np.ndarray], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[int, int, memoryview]]:
    """(tensor index, byte offset, little-endian bytes) of each chunk, as views: no copy of
    a little-endian, contiguous array."""
    for index, array in enumerate(arrays):
        flat = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
        raw = flat.reshape(-1).view(np.uint8).data
        for offset in range(0, len(raw), chunk_bytes):
            yield index, offset, raw[offset : offset + chunk_bytes]


def sized_parts(
    kind: type[Part], arrays: Sequence[np.ndarray], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[Part, int]]:
    """The arrays' chunks, each built in place in a stream message of ``kind`` (one copy of
    its bytes), with the tensor bytes it carries."""
    for index, offset, piece in byte_pieces(arrays, chunk_bytes):
        part = kind()
        part.chunk.tensor = index
        part.chunk.offset = offset
        part.chunk.data = piece.tobytes()
        yield part, len(piece)


def chunk_frames(
    arrays: Sequence[np.ndarray], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[bytes, int]]:
    """The arrays' chunks as serialized stream messages (``ModelPart`` and ``UpdatePart``
    frame a chunk alike), one copy of each byte, with the tensor bytes each carries."""
    for index, offset, piece in byte_pieces(arrays, chunk_bytes):
        yield encode_chunk_part(index, offset, piece), len(piece)


def iter_parts(kind: type[Part], arrays: Sequence[np.ndarray]) -> Iterator[Part]:
    """The arrays' chunks, each in a stream message of ``kind``."""
    for part, _ in sized_parts(kind, arrays):
        yield part


class ChunkChecker:
    """Follows a chunk stream against its header: order, bounds and completeness."""

    def __init__(self, infos: Sequence[TensorInfo]) -> None:
        self.infos = list(infos)
        self._tensor = 0
        self._offset = 0
        self.bytes_seen = 0

    def check(self, chunk: Chunk) -> tuple[TensorInfo, np.ndarray]:
        """Returns the tensor and the chunk's values; ValueError if it is out of place."""
        # Skip zero-sized tensors, which send no chunk.
        while self._tensor < len(self.infos) and self._offset >= self.infos[self._tensor].nbytes:
            self._tensor += 1
            self._offset = 0
        if self._tensor >= len(self.infos):
            raise ValueError("more tensor data than the header declared")
        info = self.infos[self._tensor]
        if chunk.tensor != self._tensor or chunk.offset != self._offset:
            raise ValueError(
                f"chunk out of order: expected tensor {self._tensor} ({info.name!r}) at byte "
                f"{self._offset}, got tensor {chunk.tensor} at byte {chunk.offset}"
            )
        data = chunk.data  # upb copies the bytes on every access (a ChunkView does not): once
        n = len(data)
        if n == 0 or n % info.dtype.itemsize or self._offset + n > info.nbytes:
            raise ValueError(
                f"tensor {info.name!r}: chunk of {n} bytes at byte {self._offset} does not fit "
                f"its shape {list(info.shape)} ({info.nbytes} bytes of {info.dtype})"
            )
        self._offset += n
        self.bytes_seen += n
        return info, np.frombuffer(data, dtype=info.dtype)

    def finish(self) -> None:
        while self._tensor < len(self.infos) and self._offset >= self.infos[self._tensor].nbytes:
            self._tensor += 1
            self._offset = 0
        if self._tensor < len(self.infos):
            info = self.infos[self._tensor]
            raise ValueError(
                f"stream ended early: tensor {info.name!r} has {self._offset} of "
                f"{info.nbytes} bytes"
            )


def assemble(infos: Sequence[TensorInfo], chunks: Iterator[Chunk]) -> Params:
    """Rebuild whole arrays from a chunk stream (the trainer's side: one model at a time)."""
    out = {i.name: np.empty(i.shape, dtype=i.dtype) for i in infos}
    flat = [out[i.name].reshape(-1) for i in infos]
    starts = [0] * len(infos)
    checker = ChunkChecker(infos)
    for chunk in chunks:
        _info, values = checker.check(chunk)
        k = chunk.tensor
        flat[k][starts[k] : starts[k] + values.size] = values
        starts[k] += values.size
    checker.finish()
    return out
