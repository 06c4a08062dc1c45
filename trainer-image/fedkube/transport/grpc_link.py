"""The product's transport: the wire protocol over one gRPC channel, mutual TLS when asked."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc

from fedkube.errors import AggregatorUnavailable, UpdateRefused
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.proto.compat import GO_AHEAD_METADATA, NOTICE_METADATA
from fedkube.security.aggregator_identity import AggregatorCheck, new_nonce
from fedkube.security.tls import channel_credentials, endpoint_host
from fedkube.transport import bulk_calls
from fedkube.transport.link import SiteLink, UpdateMessage
from fedkube.wire.chunk_frames import ChunkPart

T = TypeVar("T")
log = logging.getLogger("fedkube.transport")

# Statuses that mean "the aggregator is not there right now": reconnect.
TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


# A trainer notices a dead aggregator (or path) within a minute and reconnects; it pings
# no more often than the aggregator permits (every 10 s). While the aggregator is away, the
# channel tries to connect again at most 5 s apart, as the client's own backoff does: gRPC's
# default grows to 120 s, so a trainer that started before its aggregator (a pod scheduled
# first) could wait minutes after the aggregator came up.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


def _translated(e: grpc.RpcError) -> Exception:
    code: grpc.StatusCode = e.code()
    if code in TRANSIENT:
        return AggregatorUnavailable(f"{code.name}: {e.details()}")
    refused = UpdateRefused(str(e.details()))
    refused.status = code.name
    return refused


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except grpc.RpcError as e:
        raise _translated(e) from None


def _stream(parts: Iterator[T]) -> Iterator[T]:
    try:
        yield from parts
    except grpc.RpcError as e:
        raise _translated(e) from None


def _after_go_ahead(parts: Iterable[T], go_ahead: threading.Event) -> Iterator[T]:
    """An update's header, then its chunks once the aggregator says the upload holds a slot."""
    it = iter(parts)
    header = next(it, None)
    if header is None:
        return
    yield header
    go_ahead.wait()
    yield from it


def _upload_on_go_ahead(submit: Any, parts: Iterable[UpdateMessage]) -> pb.Receipt:
    """``SubmitUpdate``, its chunks held back until the aggregator's headers (the go-ahead, or
    its answer when it refuses the header). gRPC's own thread reads the parts."""
    go_ahead = threading.Event()
    call = submit.future(_after_go_ahead(parts, go_ahead))
    try:
        call.initial_metadata()  # returns once the headers came or the call ended
    finally:
        go_ahead.set()
    receipt: pb.Receipt = call.result()
    return receipt


# An update travels over a connection of its own, closed once the update is in: the
# aggregator's gRPC keeps a read buffer per connection sized by the largest reads it has seen
# (up to the chunk size; grpc/grpc#42194), which a long-lived connection would hold for the
# whole job, a MiB per site. A local subchannel pool keeps it off the long-lived connection.
BULK_CHANNEL_OPTIONS = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]


class GrpcLink(SiteLink):
    def __init__(
        self, endpoint: str, tls_dir: Path | None = None, consortium: str | None = None
    ) -> None:
        self.endpoint = endpoint
        self.tls_dir = tls_dir
        self.channel = self._channel(CHANNEL_OPTIONS)
        self.stub = pb_grpc.AggregatorStub(self.channel)
        self._get_model = bulk_calls.get_model(self.channel)
        # Whether the aggregator (at the last Subscribe) gives uploads a go-ahead.
        self.go_ahead = False
        # Under mutual TLS the aggregator proves, at every subscribe, that its certificate is
        # not on this site's revocation list (gRPC cannot check one for a client).
        self.aggregator_check = (
            AggregatorCheck(tls_dir, endpoint_host(endpoint), consortium)
            if tls_dir is not None
            else None
        )

    def _channel(self, options: list[tuple[str, int]]) -> grpc.Channel:
        if self.tls_dir is not None:
            return grpc.secure_channel(
                self.endpoint, channel_credentials(self.tls_dir), options=options
            )
        return grpc.insecure_channel(self.endpoint, options=options)

    def subscribe(self, request: pb.JoinRequest) -> Iterator[pb.Event]:
        if self.aggregator_check is not None:
            self._check_aggregator(request.job, request.site)
        return self._subscription(self.stub.Subscribe(request))

    def _subscription(self, call: Any) -> Iterator[pb.Event]:
        """The events of one Subscribe; first, what the aggregator says with its headers:
        whether it gives uploads a go-ahead, and any notice (this site's release is one
        protocol version behind: upgrade it)."""
        try:
            headers = dict(call.initial_metadata() or ())
        except grpc.RpcError as e:
            raise _translated(e) from None
        self.go_ahead = GO_AHEAD_METADATA in headers
        notice = headers.get(NOTICE_METADATA)
        if notice:
            log.warning("the aggregator says: %s", notice)
        yield from _stream(call)

    def _check_aggregator(self, job: str, site: str) -> None:
        """Raises TlsError unless the aggregator signs a fresh nonce with a certificate this
        site's revocation list does not name."""
        assert self.aggregator_check is not None
        nonce = new_nonce()
        challenge = pb.IdentityChallenge(ref=pb.RoundRef(job=job, site=site), nonce=nonce)
        proof = _call(lambda: self.stub.ProveIdentity(challenge, timeout=30))
        self.aggregator_check.check(job, site, nonce, proof.certificate, proof.signature)

    def get_model(self, request: pb.ModelRequest) -> Iterator[pb.ModelPart | ChunkPart]:
        # Chunks read in place (``transport.bulk_calls``): no copy past gRPC's own.
        return _stream(self._get_model(request))

    def submit_update(self, parts: Iterable[UpdateMessage]) -> int:
        with self._channel(BULK_CHANNEL_OPTIONS) as bulk:
            # Frames go out as they are (``transport.bulk_calls``), messages serialised.
            submit = bulk_calls.submit_update(bulk)
            if self.go_ahead:
                receipt = _call(lambda: _upload_on_go_ahead(submit, parts))
            else:
                receipt = _call(lambda: submit(iter(parts)))
        return int(receipt.bytes_received)

    def report_evaluation(self, message: pb.Evaluation) -> None:
        _call(lambda: self.stub.ReportEvaluation(message))

    def advertise_keys(self, message: pb.KeyAdvertisement) -> None:
        _call(lambda: self.stub.AdvertiseKeys(message))

    def share_keys(self, message: pb.KeyShares) -> None:
        _call(lambda: self.stub.ShareKeys(message))

    def reveal_shares(self, message: pb.Reveal) -> None:
        _call(lambda: self.stub.RevealShares(message))

    def sign_survivors(self, message: pb.Consistency) -> None:
        _call(lambda: self.stub.SignSurvivors(message))

    def decline_task(self, message: pb.Decline) -> None:
        try:
            self.stub.DeclineTask(message, timeout=30)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise _translated(e) from None
            log.info("the aggregator takes no declines (an earlier release); it waits instead")

    def progress(self, job: str, site: str) -> bytes | None:
        request = pb.ProgressRequest(ref=pb.RoundRef(job=job, site=site))
        reply = _call(lambda: self.stub.GetProgress(request, timeout=10))
        return bytes(reply.json)

    def close(self) -> None:
        self.channel.close()
