"""Tensors on the wire, the generated protocol code, and safetensors files."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
from fedkube.proto.generate import HERE as PROTO_DIR
from fedkube.proto.generate import generate
from fedkube.storage.safetensors_file import read_safetensors, write_safetensors
from fedkube.wire.tensors import CHUNK_BYTES, ChunkChecker, assemble, iter_chunks, specs_of


def test_generated_code_is_current(tmp_path: Path) -> None:
    for fresh in generate(tmp_path):
        committed = PROTO_DIR / fresh.name
        assert filecmp.cmp(fresh, committed, shallow=False), (
            f"{committed.name} is stale: run `python -m fedkube.proto.generate`"
        )


def test_chunks_stay_under_a_mebibyte_and_reassemble_exactly() -> None:
    rng = np.random.default_rng(0)
    params = {
        "big": rng.standard_normal((700, 1000)).astype(np.float32),  # 2.8 MB
        "empty": np.zeros((0, 3), np.float32),
        "small": rng.standard_normal(5).astype(np.float64),
    }
    chunks = list(iter_chunks(list(params.values())))
    assert max(len(c.data) for c in chunks) <= CHUNK_BYTES
    assert max(c.ByteSize() for c in chunks) < 4 << 20
    back = assemble(specs_of(params), iter(chunks))
    for k, v in params.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)


def test_out_of_order_and_short_streams_are_refused() -> None:
    params = {"w": np.ones(300_000, np.float32)}
    chunks = list(iter_chunks([params["w"]]))
    infos = specs_of(params)
    with pytest.raises(ValueError, match="chunk out of order"):
        assemble(infos, iter([chunks[1], chunks[0]]))
    with pytest.raises(ValueError, match="stream ended early"):
        assemble(infos, iter(chunks[:1]))
    checker = ChunkChecker(infos)
    for c in chunks:
        checker.check(c)
    with pytest.raises(ValueError, match="more tensor data"):
        checker.check(chunks[0])


def test_our_safetensors_writer_is_read_by_the_library(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64)}
    write_safetensors(tmp_path / "m.safetensors", arrays, {"k": "v"})
    loaded = load_file(str(tmp_path / "m.safetensors"))
    assert all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
    again, meta = read_safetensors(tmp_path / "m.safetensors")
    assert meta == {"k": "v"} and np.array_equal(again["a"], arrays["a"])
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file is left behind"
