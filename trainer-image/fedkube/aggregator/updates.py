"""Receiving one site's update: checked chunk by chunk, held aside, folded only when whole.

An update is folded into the running sum only after its last chunk has arrived and passed
every check, so a refused or broken update never touches the model. Small updates are held
in memory; larger ones spill to a temporary file, which keeps the aggregator's memory near
one model's size however many sites upload at once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np

from fedkube.errors import InvalidUpdate
from fedkube.proto import fedkube_pb2 as pb
from fedkube.wire.chunk_frames import Chunk
from fedkube.wire.tensors import ChunkChecker, TensorInfo, from_spec

SPOOL_IN_MEMORY_BYTES = 512 << 10


def check_tensors(
    header: pb.UpdateHeader, expected: Sequence[TensorInfo], codec: pb.Codec = pb.RAW
) -> None:
    """The update's tensors must be the model's, in order, with the same dtype and shape, in
    the codec this job's aggregator reads (RAW, or MASKED_FIXED_POINT under secure
    aggregation)."""

    def refuse(message: str) -> InvalidUpdate:
        return InvalidUpdate(message, site=header.ref.site, round=header.ref.round)

    if header.codec != codec:
        got = pb.Codec.Name(header.codec) if header.codec in pb.Codec.values() else header.codec
        raise refuse(f"codec {got}; this job's aggregator reads {pb.Codec.Name(codec)}")
    try:
        got = [from_spec(s) for s in header.tensors]
    except ValueError as e:
        raise refuse(str(e)) from None
    if len(got) != len(expected):
        raise refuse(f"update has {len(got)} tensors, the model has {len(expected)}")
    for g, want in zip(got, expected, strict=True):
        if g != want:
            raise refuse(
                f"tensor {g.name!r} {g.dtype}{list(g.shape)} does not match the model's "
                f"{want.name!r} {want.dtype}{list(want.shape)}"
            )


class SpooledUpdate:
    """One update in flight: its header, its checked chunks, and where they are held."""

    def __init__(
        self, header: pb.UpdateHeader, infos: Sequence[TensorInfo], norm_bound: float | None = None
    ) -> None:
        self.header = header
        self.norm_bound = norm_bound
        self._sum_squares = 0.0
        self.site = header.ref.site
        self.round = header.ref.round
        self.weight = float(header.num_samples)
        self.infos = list(infos)
        self._checker = ChunkChecker(infos)
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115 - lives as long as the update; close() ends it
        self._pieces: list[tuple[int, int, int]] = []  # (tensor, first element, byte count)
        # The file holds the tensors' bytes back to back, in order: where each one starts.
        self._starts = np.cumsum([0] + [i.nbytes for i in self.infos]).tolist()

    @property
    def bytes_received(self) -> int:
        return self._checker.bytes_seen

    def add(self, chunk: Chunk) -> None:
        try:
            info, values = self._checker.check(chunk)
        except ValueError as e:
            raise InvalidUpdate(str(e), site=self.site, round=self.round) from None
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            at = chunk.offset // info.dtype.itemsize + int(np.flatnonzero(~np.isfinite(values))[0])
            raise InvalidUpdate(
                f"tensor {info.name!r} holds a non-finite value (NaN or Inf) at element {at}",
                site=self.site,
                round=self.round,
            )
        if self.norm_bound is not None:
            self._sum_squares += float(np.dot(values.astype(np.float64), values.astype(np.float64)))
        self._file.write(values.data)
        self._pieces.append((chunk.tensor, chunk.offset // info.dtype.itemsize, values.nbytes))

    def finish(self) -> None:
        try:
            self._checker.finish()
        except ValueError as e:
            raise InvalidUpdate(str(e), site=self.site, round=self.round) from None
        norm = self._sum_squares**0.5
        if self.norm_bound is not None and norm > self.norm_bound:
            raise InvalidUpdate(
                f"the update's L2 norm {norm:.4g} is above security.updateNormBound "
                f"{self.norm_bound:g}",
                site=self.site,
                round=self.round,
            )

    def pieces(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(tensor index, first element, values) for every chunk, in order."""
        self._file.seek(0)
        for tensor, start, nbytes in self._pieces:
            data = self._file.read(nbytes)
            yield tensor, start, np.frombuffer(data, dtype=self.infos[tensor].dtype)

    def runs(self, count: int) -> list[Iterator[tuple[int, int, np.ndarray]]]:
        """The pieces in up to ``count`` runs of about equal bytes, in order, each readable
        on a thread of its own (positioned reads of the spool file): a fold split over
        cores. One run while the update is small enough to be held in memory. A piece's
        values are good until its run reads the next one."""
        if count <= 1 or self.bytes_received <= SPOOL_IN_MEMORY_BYTES:
            return [self.pieces()]
        self._file.flush()
        fd = self._file.fileno()  # on disk past SPOOL_IN_MEMORY_BYTES
        share = -(-self.bytes_received // count)  # the file holds the pieces back to back
        runs: list[list[tuple[int, int, int, int]]] = [[] for _ in range(count)]
        at = 0
        for tensor, start, nbytes in self._pieces:
            runs[min(count - 1, at // share)].append((tensor, start, at, nbytes))
            at += nbytes
        return [self._read_run(fd, run) for run in runs if run]

    def _read_run(
        self, fd: int, run: list[tuple[int, int, int, int]]
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        # Into one buffer for the whole run: no chunk-sized allocation per piece, which
        # glibc would keep in each thread's arena after the round.
        buffer = memoryview(bytearray(max(nbytes for *_, nbytes in run)))
        for tensor, start, at, nbytes in run:
            if os.preadv(fd, [buffer[:nbytes]], at) != nbytes:
                raise OSError(f"the spool of {self.site!r}'s update ended early")
            yield tensor, start, np.frombuffer(buffer[:nbytes], dtype=self.infos[tensor].dtype)

    def read(self, tensor: int, start: int, count: int) -> np.ndarray:
        dtype = self.infos[tensor].dtype
        self._file.seek(self._starts[tensor] + start * dtype.itemsize)
        return np.frombuffer(self._file.read(count * dtype.itemsize), dtype=dtype)

    def close(self) -> None:
        self._file.close()
