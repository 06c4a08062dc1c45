"""safetensors files, written by streaming each array (no whole-model copy) and read by the
safetensors library itself, in the order they were written.

The format: an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the raw little-endian bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedkube.storage.atomic import atomic_write

_CODES = {
    np.dtype("<f4"): "F32",
    np.dtype("<f8"): "F64",
    np.dtype("<f2"): "F16",
    np.dtype("<i8"): "I64",
    np.dtype("<i4"): "I32",
    np.dtype("<u4"): "U32",
    np.dtype("u1"): "U8",
}
_WRITE_BLOCK = 1 << 22


def write_safetensors(
    path: Path, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, arr in arrays.items():
        code = _CODES.get(np.dtype(arr.dtype).newbyteorder("<"))
        if code is None:
            raise ValueError(f"tensor {name!r}: dtype {arr.dtype} is not supported")
        header[name] = {
            "dtype": code,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format recommends 8-byte alignment of the data
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays.values():
            flat = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
            raw = flat.reshape(-1).view(np.uint8).data
            for start in range(0, len(raw), _WRITE_BLOCK):
                f.write(raw[start : start + _WRITE_BLOCK])


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The file's arrays in the order they were written (a model's tensors travel in its own
    order; the library lists names sorted), and its metadata."""
    from safetensors import safe_open

    arrays: dict[str, np.ndarray] = {}
    with safe_open(str(path), framework="numpy") as f:
        metadata = dict(f.metadata() or {})
        names = _written_order(path, list(f.keys()))
        for name in names:
            arrays[name] = f.get_tensor(name)
    return arrays, metadata


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The file's metadata alone (its header), without reading the tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def _written_order(path: Path, names: list[str]) -> list[str]:
    """``names`` by where their bytes start in the file: the order they were written in.
    The library has checked the header already (it opened the file)."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return sorted(names, key=lambda name: (header[name]["data_offsets"][0], name))
