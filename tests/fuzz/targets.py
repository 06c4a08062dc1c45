"""Fuzz targets: each takes bytes, drives one of fedkube's decoders of what crosses a process
boundary (wire tensors, each codec, secure-aggregation messages, manifests, site files) and
lets only the refusals the code promises escape. Anything else (an IndexError, a
MemoryError, a hang) is a finding. Run by ``run_target`` under atheris, coverage-guided: a
short smoke in the test suite, long in ``bench/fuzz.py``."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from fedkube.aggregator.updates import SpooledUpdate, check_tensors
from fedkube.codec.decoded import DecodedUpdate
from fedkube.codec.downlink import WireArrays
from fedkube.codec.int8 import Int8
from fedkube.codec.topk import TopK
from fedkube.errors import FedkubeError
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg import shamir
from fedkube.secagg.roster import check_roster
from fedkube.secagg.server import SecureSum
from fedkube.spec.load import parse_job
from fedkube.testing import manifest
from fedkube.trainer.model_download import read_model
from fedkube.wire.chunk_frames import ChunkPart, decode_part, encode_chunk_part
from fedkube.wire.tensors import TensorInfo, iter_parts, specs_of, to_spec
from google.protobuf.message import DecodeError

# The model the targets' messages are about: small, two tensors of two dtypes' worth.
MODEL = {
    "weight": np.arange(24, dtype=np.float32).reshape(4, 6) / 10,
    "bias": np.zeros(4, dtype=np.float32),
}
INFOS: list[TensorInfo] = specs_of(MODEL)
CODECS = [Int8(block_size=16), TopK(0.5), TopK(0.5, quantise=True)]
PARAMS = pb.SecAggParams(threshold=2, clip_range=4.0)

# What a decoder may answer bad input with: its own refusal, or protobuf's parse error.
REFUSALS: tuple[type[BaseException], ...] = (FedkubeError, DecodeError)


@dataclass(frozen=True)
class Target:
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]


def _messages(data: bytes, kind: type[pb.UpdatePart] | type[pb.ModelPart]) -> list:
    """A stream of messages, each length-prefixed (two bytes) in ``data``, read as the
    aggregator and the trainers read them (``chunk_frames.decode_part``)."""
    out, at = [], 0
    while at + 2 <= len(data) and len(out) < 64:
        n = int.from_bytes(data[at : at + 2], "big")
        out.append(decode_part(kind, data[at + 2 : at + 2 + n]))
        at += 2 + n
    return out


def _framed(messages: list) -> bytes:
    return b"".join(len(b := m.SerializeToString()).to_bytes(2, "big") + b for m in messages)


# -- an update as the aggregator reads it ---------------------------------------------------------


def update_stream(data: bytes) -> None:
    try:
        parts = _messages(data, pb.UpdatePart)
        if not parts or not parts[0].HasField("header"):
            return
        header = parts[0].header
        check_tensors(header, INFOS)
        update = SpooledUpdate(header, INFOS, norm_bound=100.0)
        try:
            for part in parts[1:]:
                update.add(part.chunk)
            update.finish()
            for _t, _start, values in update.pieces():
                assert np.isfinite(values).all(), "a non-finite value was taken"
        finally:
            update.close()
    except REFUSALS:
        return


def _update_seeds() -> list[bytes]:
    header = pb.UpdateHeader(
        ref=pb.RoundRef(job="j", round=1, site="s"),
        num_samples=10,
        tensors=[to_spec(i) for i in INFOS],
        codec=pb.RAW,
    )
    parts = [pb.UpdatePart(header=header), *iter_parts(pb.UpdatePart, list(MODEL.values()))]
    return [_framed(parts), _framed(parts[:2])]


# -- a chunk frame read in place, against protobuf's parser -------------------------------------


def chunk_frame(data: bytes) -> None:
    """Where the fast path reads a chunk, protobuf reads the same chunk from the same bytes."""
    try:
        fast = decode_part(pb.UpdatePart, data)
    except DecodeError:
        return
    if isinstance(fast, ChunkPart):
        slow = pb.UpdatePart.FromString(data)
        assert slow.WhichOneof("part") == "chunk", "read a chunk protobuf does not see"
        got = (fast.chunk.tensor, fast.chunk.offset, bytes(fast.chunk.data))
        assert got == (slow.chunk.tensor, slow.chunk.offset, slow.chunk.data), "read differently"


def _frame_seeds() -> list[bytes]:
    return [
        encode_chunk_part(0, 0, b"\x01\x02\x03\x04"),
        encode_chunk_part(3, 1 << 20, bytes(300)),
        pb.UpdatePart(header=pb.UpdateHeader(num_samples=2)).SerializeToString(),
    ]


# -- the model as a site reads it (from a possibly hostile aggregator) ----------------------------


def model_download(data: bytes) -> None:
    try:
        parts = _messages(data, pb.ModelPart)
        if not parts or not parts[0].HasField("header"):
            return
        model_bytes = sum(i.nbytes for i in INFOS)
        got = read_model(parts[0].header, (p.chunk for p in parts[1:]), model_bytes)
        declared = sum(v.nbytes for v in got.values())
        assert declared <= 4 * model_bytes + (1 << 20), "read a model past the limit"
    except REFUSALS:
        return


def _model_seeds() -> list[bytes]:
    header = pb.ModelHeader(
        ref=pb.RoundRef(job="j", round=1, site="s"),
        tensors=[to_spec(i) for i in INFOS],
        codec=pb.RAW,
    )
    chunks = iter_parts(pb.ModelPart, list(MODEL.values()))
    return [_framed([pb.ModelPart(header=header), *chunks])]


# -- each codec's wire tensors, decoded -----------------------------------------------------------


def codec_decode(data: bytes) -> None:
    if not data:
        return
    codec = CODECS[data[0] % len(CODECS)]
    wire_infos = codec.wire_infos(INFOS)
    raw, at, wire = data[1:], 0, {}
    for info in wire_infos:
        n = info.nbytes
        chunk = raw[at : at + n].ljust(n, b"\0")
        at += n
        wire[info.name] = np.frombuffer(chunk, dtype=info.dtype).reshape(info.shape)
    decoded = DecodedUpdate(WireArrays(wire), codec, INFOS)
    if decoded.problem() is not None:
        return
    # Sound by the codec's word: it must decode whole, finite, in the model's layout.
    for t, start, values in decoded.pieces():
        assert start >= 0 and start + values.size <= INFOS[t].size
        assert np.isfinite(values).all(), "decoded to a non-finite value, yet taken"


def _codec_seeds() -> list[bytes]:
    out = []
    for k, codec in enumerate(CODECS):
        wire, _ = codec.encode(MODEL)
        out.append(bytes([k]) + b"".join(np.ascontiguousarray(v).tobytes() for v in wire.values()))
    return out


# -- secure aggregation's messages ----------------------------------------------------------------


def secagg_messages(data: bytes) -> None:
    if not data:
        return
    kind, body = data[0] % 3, data[1:]
    try:
        if kind == 0:
            SecureSum.check_keys(pb.KeyAdvertisement.FromString(body), PARAMS)
        elif kind == 1:
            task = pb.SecAggTask.FromString(body)
            check_roster(list(task.roster), PARAMS.threshold)
        else:
            reveal = pb.Reveal.FromString(body)
            shares = {s.x: s.y for s in reveal.self_seed_shares}
            if shares:
                shamir.combine(shares, max(1, min(len(shares), 3)))
    except REFUSALS:
        return


def _secagg_seeds() -> list[bytes]:
    from fedkube.secagg.site import SiteSession

    session = SiteSession("j", "s", 1, 1, PARAMS)
    advert = session.advertisement(0, 10)
    shares = shamir.split(b"\1" * 32, [1, 2, 3], 2)
    reveal = pb.Reveal(
        self_seed_shares=[pb.SecretShare(owner="s", x=x, y=y) for x, y in shares.items()]
    )
    roster = pb.SecAggTask(roster=[pb.SiteKeys(site="s", index=1, num_samples=10)])
    return [b"\0" + advert.SerializeToString(), b"\1" + roster.SerializeToString(),
            b"\2" + reveal.SerializeToString()]  # fmt: skip


# -- a manifest, as `fedkube validate` and the operator read it -----------------------------------


def manifest_text(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        document = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return
    try:
        parse_job(document)
    except REFUSALS:
        return


def _manifest_seeds() -> list[bytes]:
    return [yaml.safe_dump(manifest(sites=2)).encode(), b"apiVersion: fedkube.io/v1alpha1\n"]


# -- a site's own file ----------------------------------------------------------------------------


_FILE_JOB = None


def site_file(data: bytes) -> None:
    from fedkube.data.table import read_site_table

    global _FILE_JOB
    if _FILE_JOB is None:
        doc = manifest(sites=1)
        doc["spec"]["task"].update(numFeatures=3, numClasses=2)
        doc["spec"]["sites"][0]["data"] = {"file": {"path": "site.csv", "labelColumn": "y"}}
        _FILE_JOB = parse_job(doc)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "site.csv").write_bytes(data)
        try:
            read_site_table(_FILE_JOB.spec, "site-0", data_dir=Path(folder))
        except REFUSALS:
            return


def _file_seeds() -> list[bytes]:
    return [b"a,b,c,y\n1,2,3,0\n4,5,6,1\n", b"a,b,c,y\n1,,3,x\n"]


TARGETS: dict[str, Target] = {
    "update_stream": Target(update_stream, _update_seeds),
    "model_download": Target(model_download, _model_seeds),
    "chunk_frame": Target(chunk_frame, _frame_seeds),
    "codec_decode": Target(codec_decode, _codec_seeds),
    "secagg_messages": Target(secagg_messages, _secagg_seeds),
    "manifest": Target(manifest_text, _manifest_seeds),
    "site_file": Target(site_file, _file_seeds),
}
