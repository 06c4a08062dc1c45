"""int8: each block of values sent as signed bytes with one float32 scale (max |v| / 127),
rounded stochastically so the decoded update's mean is the update. About 4x fewer bytes."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from fedkube.codec.base import PIECE_VALUES, Codec, WireReader, scale_problem, stochastic_round
from fedkube.proto import fedkube_pb2 as pb
from fedkube.wire.tensors import Params, TensorInfo

LEVELS = 127


class Int8(Codec):
    wire = pb.QUANTISED_INT8

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.rng = np.random.default_rng()

    def wire_infos(self, infos: Sequence[TensorInfo]) -> list[TensorInfo]:
        out = []
        for i in infos:
            out.append(TensorInfo(i.name, np.dtype("i1"), (i.size,)))
            blocks = math.ceil(i.size / self.block_size)
            out.append(TensorInfo(i.name + ".scale", np.dtype("<f4"), (blocks,)))
        return out

    def quantise(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(int8 values, float32 scale per block, the dequantised values)."""
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        b = min(self.block_size, max(flat.size, 1))
        pad = (-flat.size) % b
        blocks = np.concatenate([flat, np.zeros(pad)]).reshape(-1, b)
        scale = np.abs(blocks).max(axis=1) / LEVELS
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        q = stochastic_round(blocks / scale[:, None].astype(np.float64), self.rng)
        q = np.clip(q, -LEVELS, LEVELS)
        decoded = (q * scale[:, None]).reshape(-1)[: flat.size]
        return q.reshape(-1)[: flat.size].astype(np.int8), scale, decoded

    def encode(self, update: Params) -> tuple[Params, Params]:
        wire: Params = {}
        seen: Params = {}
        for name, values in update.items():
            q, scale, decoded = self.quantise(values)
            wire[name], wire[name + ".scale"] = q, scale
            seen[name] = decoded.astype(np.float32).reshape(np.shape(values))
        return wire, seen

    def check(self, reader: WireReader, infos: Sequence[TensorInfo]) -> str | None:
        for t, info in enumerate(infos):
            blocks = math.ceil(info.size / min(self.block_size, max(info.size, 1)))
            problem = scale_problem(info.name, reader.read(2 * t + 1, 0, blocks), LEVELS)
            if problem is not None:
                return problem
        return None

    def pieces(
        self, reader: WireReader, infos: Sequence[TensorInfo]
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        for t, info in enumerate(infos):
            b = min(self.block_size, max(info.size, 1))
            step = max(b, (PIECE_VALUES // b) * b)  # whole blocks per piece
            for start in range(0, info.size, step):
                count = min(step, info.size - start)
                q = reader.read(2 * t, start, count).astype(np.float32)
                blocks = math.ceil(count / b)
                scale = reader.read(2 * t + 1, start // b, blocks)
                yield t, start, q * np.repeat(scale, b)[:count]
