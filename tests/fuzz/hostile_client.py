"""A hostile client against a real aggregator process over gRPC: for every message a site
sends, inputs generated from the proto's own descriptors (each field set to the values that
break naive code: zero, negative, past 32 and 64 bits, NaN and Inf, empty and huge strings
and bytes, unknown enum values, a thousand repeats, a cleared sub-message), and for update
streams the order broken too (no header, two headers, chunks missing, repeated, reordered).

After each input the aggregator must answer; at the end its model must be the one it
started with (no valid update from every site ever arrives, so the round cannot close), every
value finite, and its threads and open files as many as before."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from fedkube.proto import PROTOCOL_VERSION
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.wire.tensors import Params, iter_parts, specs_of, to_spec
from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf.message import Message

JOB = "hostile-client"
SITE = "site-0"

_INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**32 - 1, 2**62, 2**63 - 1, -(2**63), 2**64 - 1]
_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
}
_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 3e38]
_STRINGS = ["", "x" * 10_000, "../../etc/passwd", "site-0\x00", "\u202esite-0", "site-1 "]
_BYTES = [b"", b"\0" * 32, b"\xff" * 100_000, bytes(range(256))]


def _values(f: Any) -> list[Any]:
    """Boundary values for one scalar field."""
    if f.type in _RANGES:
        lo, hi = _RANGES[f.type]
        return [v for v in _INTS if lo <= v <= hi]
    if f.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return _FLOATS
    if f.type == F.TYPE_STRING:
        return _STRINGS
    if f.type == F.TYPE_BYTES:
        return _BYTES
    if f.type == F.TYPE_BOOL:
        return [True, False]
    if f.type == F.TYPE_ENUM:
        return [*(v.number for v in f.enum_type.values), 99, -5]
    return []


def mutations(base: Message, depth: int = 0) -> Iterator[Message]:
    """Copies of ``base`` with one field (at any depth, two levels down) set to a breaking
    value, or cleared, or repeated a thousand times."""
    for f in base.DESCRIPTOR.fields:
        if f.type == F.TYPE_MESSAGE:
            if f.message_type.GetOptions().map_entry:
                m = base.__class__()
                m.CopyFrom(base)
                target = getattr(m, f.name)
                key_type = f.message_type.fields_by_name["key"]
                for i in range(1000):
                    target[str(i) if key_type.type == F.TYPE_STRING else i] = float(i)  # type: ignore[index]
                yield m
                continue
            if f.is_repeated:
                many = base.__class__()
                many.CopyFrom(base)
                for _ in range(200):
                    getattr(many, f.name).add()
                yield many
                empty = base.__class__()
                empty.CopyFrom(base)
                empty.ClearField(f.name)
                yield empty
                continue
            cleared = base.__class__()
            cleared.CopyFrom(base)
            cleared.ClearField(f.name)
            yield cleared
            if depth < 2:
                for inner in mutations(getattr(base, f.name), depth + 1):
                    m = base.__class__()
                    m.CopyFrom(base)
                    getattr(m, f.name).CopyFrom(inner)
                    yield m
            continue
        for value in _values(f):
            m = base.__class__()
            m.CopyFrom(base)
            if f.is_repeated:
                getattr(m, f.name)[:] = [value] * 1000
            else:
                setattr(m, f.name, value)
            yield m


def _ref(round: int = 1) -> pb.RoundRef:
    return pb.RoundRef(job=JOB, round=round, attempt=1, site=SITE)


def _update(model: Params) -> list[pb.UpdatePart]:
    header = pb.UpdateHeader(
        ref=_ref(),
        num_samples=10,
        tensors=[to_spec(i) for i in specs_of(model)],
        codec=pb.RAW,
        metrics={"train_loss": 0.5},
    )
    return [pb.UpdatePart(header=header), *iter_parts(pb.UpdatePart, list(model.values()))]


def _streams(model: Params) -> Iterator[list[pb.UpdatePart]]:
    """Update streams: the header mutated, one chunk mutated, and the order broken."""
    good = _update(model)
    header, chunks = good[0], good[1:]
    for h in mutations(header.header):
        yield [pb.UpdatePart(header=h), *chunks]
    for c in mutations(chunks[0].chunk):
        yield [header, pb.UpdatePart(chunk=c), *chunks[1:]]
    yield []
    yield chunks
    yield [header, header, *chunks]
    yield [header]
    yield [header, *chunks[:-1]]
    yield [header, *reversed(chunks)]
    yield [header, *chunks, chunks[-1]]
    yield [header, chunks[0], chunks[0], *chunks[1:]]


@dataclass
class Outcome:
    inputs: int = 0
    distinct: set[str] = field(default_factory=set)
    by_status: dict[str, int] = field(default_factory=dict)
    unanswered: list[str] = field(default_factory=list)


def _key(call: str, messages: list[Message]) -> str:
    h = hashlib.sha256(call.encode())
    for m in messages:
        h.update(m.SerializeToString(deterministic=True))
    return h.hexdigest()


def attack(
    stub: pb_grpc.AggregatorStub,
    model: Params,
    answers: Callable[[], bool],
    limit: int | None = None,
) -> Outcome:
    """Send every generated input (up to ``limit``); after each, the aggregator must answer."""
    out = Outcome()
    unary: list[tuple[str, Callable[..., Any], Message]] = [
        ("ReportEvaluation", stub.ReportEvaluation,
         pb.Evaluation(ref=_ref(), model_version=0, num_samples=10,
                       metrics={"accuracy": 0.5, "loss": 0.7})),
        ("AdvertiseKeys", stub.AdvertiseKeys,
         pb.KeyAdvertisement(ref=_ref(), model_version=0, share_public_key=b"\1" * 32,
                             mask_public_key=b"\2" * 32, num_samples=10)),
        ("ShareKeys", stub.ShareKeys,
         pb.KeyShares(ref=_ref(), shares=[pb.EncryptedShare(sender=SITE, recipient="site-1",
                                                            nonce=b"\0" * 12, ciphertext=b"x")])),
        ("RevealShares", stub.RevealShares,
         pb.Reveal(ref=_ref(), self_seed_shares=[pb.SecretShare(owner=SITE, x=1, y=b"\1" * 32)])),
        ("SignSurvivors", stub.SignSurvivors, pb.Consistency(ref=_ref(), signature=b"\3" * 64)),
        ("GetProgress", stub.GetProgress, pb.ProgressRequest(ref=_ref())),
        ("ProveIdentity", stub.ProveIdentity,
         pb.IdentityChallenge(ref=_ref(), nonce=b"\4" * 32)),
    ]  # fmt: skip
    streams: list[tuple[str, Callable[..., Any], Message]] = [
        ("GetModel", stub.GetModel, pb.ModelRequest(ref=_ref(), has_model=False)),
        ("Subscribe", stub.Subscribe,
         pb.JoinRequest(job=JOB, site="site-2", protocol_version=PROTOCOL_VERSION)),
    ]  # fmt: skip

    def record(call: str, messages: list[Message], send: Callable[[], Any]) -> bool:
        key = _key(call, messages)
        if key in out.distinct:
            return True
        out.distinct.add(key)
        out.inputs += 1
        try:
            send()
            status = "OK"
        except grpc.RpcError as e:
            status = e.code().name
        out.by_status[status] = out.by_status.get(status, 0) + 1
        if not answers():
            out.unanswered.append(f"{call}: the aggregator stopped answering")
            return False
        return limit is None or out.inputs < limit

    for call, send, base in unary:
        for m in [base, *mutations(base)]:
            if not record(call, [m], lambda s=send, m=m: s(m, timeout=10)):
                return out
    for call, send, base in streams:
        for m in mutations(base):
            # Read the first answer only: a Subscribe that joins stays open otherwise.
            def first(s: Callable[..., Any] = send, m: Message = m) -> None:
                it = s(m, timeout=5)
                try:
                    next(it)
                finally:
                    it.cancel()

            if not record(call, [m], first):
                return out
    for parts in _streams(model):
        if not record("SubmitUpdate", parts,
                      lambda p=parts: stub.SubmitUpdate(iter(p), timeout=10)):  # fmt: skip
            return out
    return out


def finite(model: Params) -> bool:
    return all(bool(np.isfinite(v).all()) for v in model.values())
