"""The gRPC face of the coordinator: calls in, refusals out as gRPC statuses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from fedkube.aggregator.coordinator import Coordinator
from fedkube.aggregator.metrics import AggregatorMetrics
from fedkube.aggregator.reception import UpdateReception
from fedkube.aggregator.report import progress
from fedkube.aggregator.transfer_pace import (
    MIN_TRANSFER_KIB_PER_SECOND,
    UPLOAD_WINDOW_KIB,
    TransferPace,
)
from fedkube.errors import (
    DuplicateUpdate,
    InvalidUpdate,
    RoundClosed,
    TlsError,
    UnknownSite,
    UpdateRefused,
)
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.proto.compat import GO_AHEAD_METADATA, NOTICE_METADATA, admit
from fedkube.security.aggregator_identity import AggregatorIdentity
from fedkube.security.certs import consortium_of
from fedkube.security.revocation import Revocations
from fedkube.security.tls import peer_certificate, peer_site
from fedkube.wire.chunk_frames import ChunkPart, decode_update_part, encode_part
from fedkube.wire.tensors import CHUNK_BYTES, chunk_frames

log = logging.getLogger("fedkube.aggregator")
# A unary message about a round: it names its round and sender in ``ref``.
RefMessage = TypeVar(
    "RefMessage", pb.Evaluation, pb.KeyAdvertisement, pb.KeyShares, pb.Reveal, pb.Decline
)

# Transfers served at once, each way. Every transfer in flight holds a few chunks in buffers;
# bounding them keeps the aggregator's memory flat in the number of sites (the others wait,
# holding no more than an update's header).
MAX_CONCURRENT_TRANSFERS = 4


def server_options(upload_window_kib: int = UPLOAD_WINDOW_KIB) -> list[tuple[str, int]]:
    return [
        # gRPC grows a stream's flow-control window by bandwidth probing, to several MB per
        # stream on loopback, waiting streams' too: off, each stream has the fixed window.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", upload_window_kib * 1024),
        # Find dead connections (a site's host gone, a NAT that forgot the flow) within a
        # minute: the aggregator pings, and lets the trainers ping it as often as every 10 s.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ]


class AggregatorService(pb_grpc.AggregatorServicer):
    def __init__(
        self,
        coordinator: Coordinator,
        metrics: AggregatorMetrics,
        tls: bool = False,
        revocations: Revocations | None = None,
        consortium: str | None = None,
        identity: AggregatorIdentity | None = None,
        min_transfer_rate: float = MIN_TRANSFER_KIB_PER_SECOND * 1024,
    ) -> None:
        self.c = coordinator
        # Bytes per second a transfer holding a slot must keep up, on average.
        self.min_transfer_rate = min_transfer_rate
        # Under mutual TLS: this aggregator's certificate and key, which answer ProveIdentity.
        self.identity = identity
        self.metrics = metrics
        self.tls = tls
        self.revocations = revocations
        # The consortium every peer's certificate must name (the job's mutualTls.consortium).
        self.consortium = consortium
        self._downloads = asyncio.Semaphore(MAX_CONCURRENT_TRANSFERS)
        self._uploads = asyncio.Semaphore(MAX_CONCURRENT_TRANSFERS)
        self._downloading: set[str] = set()  # one download per site at a time

    def _authorise(self, context: grpc.aio.ServicerContext, site: str) -> None:
        """With mutual TLS a connection acts only for the site its certificate names."""
        if not self.tls:
            return
        auth = context.auth_context()
        holder = peer_site(auth)
        cert = peer_certificate(auth)  # parsed once for both checks below
        serial = self.revocations.revoked(cert) if self.revocations and cert else None
        if serial is not None:
            raise UnknownSite(
                f"the certificate of {holder!r} (serial {serial:x}) is revoked by the "
                "consortium's list (ca.crl): ask the consortium for a new one",
                site=site,
            )
        named = consortium_of(cert) if cert else None
        if self.consortium is not None and named != self.consortium:
            raise UnknownSite(
                f"the certificate of {holder!r} is for consortium {named!r}, not this job's "
                f"({self.consortium!r}): refused",
                site=site,
            )
        if holder != site:
            raise UnknownSite(
                f"this connection's certificate is for {holder!r}; it cannot act for site {site!r}",
                site=site,
            )

    def _received(self, call: str, message: Any) -> None:
        self.metrics.message("received", call, message.ByteSize())

    def _sent(self, call: str, message: Any) -> None:
        size = len(message) if isinstance(message, bytes) else message.ByteSize()
        self.metrics.message("sent", call, size)

    async def _refuse(self, context: grpc.aio.ServicerContext, e: UpdateRefused) -> None:
        self.metrics.refused(e)
        log.warning("refused site=%s round=%s: %s", e.site or "?", e.round, e)
        await context.abort(getattr(grpc.StatusCode, e.status), str(e))

    async def Subscribe(
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Event]:
        self._received("Subscribe", request)
        try:
            self._authorise(context, request.site)
            notice = admit(request.site, request.protocol_version, self.c.secure is not None)
            queue = self.c.connect(request.job, request.site)
        except UpdateRefused as e:
            await self._refuse(context, e)
            return
        headers = [(GO_AHEAD_METADATA, "1")]  # this aggregator gives uploads a go-ahead
        if notice is not None:
            log.warning("%s", notice)
            headers.append((NOTICE_METADATA, notice))
        await context.send_initial_metadata(headers)
        try:
            while True:
                event = await queue.get()
                if event is None:  # replaced by a newer connection of the same site
                    return
                self._sent("Subscribe", event)
                yield event
                if event.HasField("finished"):
                    return
        finally:
            self.c.disconnect(request.site, queue)

    async def GetModel(self, request: pb.ModelRequest, context: grpc.aio.ServicerContext) -> None:
        self._received("GetModel", request)
        site = request.ref.site
        try:
            self._authorise(context, site)  # before any slot is taken
            header, arrays = self.c.model_for(request)
            if site in self._downloading:
                raise DuplicateUpdate(f"site {site!r} is already downloading the model", site=site)
        except UpdateRefused as e:
            await self._refuse(context, e)
            return
        self._downloading.add(site)
        try:
            async with self._downloads:
                pace = TransferPace(self.min_transfer_rate)  # from when it holds the slot
                await self._write(context, pb.ModelPart(header=header), 0, pace)
                for frame, nbytes in chunk_frames(arrays):
                    self.metrics.bytes_moved("sent", nbytes)
                    await self._write(context, frame, nbytes, pace)
        finally:
            self._downloading.discard(site)

    async def _write(
        self,
        context: grpc.aio.ServicerContext,
        part: pb.ModelPart | bytes,
        nbytes: int,
        pace: TransferPace,
    ) -> None:
        """One message of a download: a header, or a chunk's frame (``chunk_frames``)."""
        self._sent("GetModel", part)
        try:
            timeout = pace.timeout(nbytes)
            if timeout <= 0:
                raise TimeoutError
            await asyncio.wait_for(context.write(part), timeout)
            pace.done(nbytes)
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{pace.why('read')}; the download is dropped",
            )

    async def SubmitUpdate(
        self,
        request_iterator: AsyncIterator[pb.UpdatePart | ChunkPart],
        context: grpc.aio.ServicerContext,
    ) -> pb.Receipt:
        reception = self.c.reception(lambda site: self._authorise(context, site))
        parts = request_iterator.__aiter__()
        try:
            # The header first, checked and admitted (one update per site and round), and
            # only then a transfer slot: an unknown or idle peer holds none.
            pace = TransferPace(0)  # the header: the idle limit alone
            first = await self._next_part(parts, reception, pace)
            if first is None:
                raise InvalidUpdate("empty update stream")
            async with self._uploads:
                await context.send_initial_metadata(((GO_AHEAD_METADATA, "go"),))
                pace = TransferPace(self.min_transfer_rate)
                while await self._next_part(parts, reception, pace) is not None:
                    pass
            received = await reception.finish_aside(self.c.folds)
        except UpdateRefused as e:
            reception.abandon()
            await self._refuse(context, e)
            raise  # abort() raises; this line is never reached
        except TimeoutError:
            reception.abandon()
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"{pace.why('sent')}; the update is dropped"
            )
            raise
        except BaseException:
            reception.abandon()
            raise
        assert reception.update is not None
        return pb.Receipt(ref=reception.update.header.ref, bytes_received=received)

    async def _next_part(
        self,
        parts: AsyncIterator[pb.UpdatePart | ChunkPart],
        reception: UpdateReception,
        pace: TransferPace,
    ) -> pb.UpdatePart | ChunkPart | None:
        """The stream's next message, fed to the reception; None at its end. A part is at
        most a chunk: it must come in the time a chunk may take."""
        timeout = pace.timeout(CHUNK_BYTES)
        if timeout <= 0:
            raise TimeoutError
        try:
            part = await asyncio.wait_for(anext(parts), timeout)
        except StopAsyncIteration:
            return None
        self._received("SubmitUpdate", part)
        before = reception.bytes_received
        reception.feed(part)
        moved = reception.bytes_received - before
        pace.done(moved)
        self.metrics.bytes_moved("received", moved)
        return part

    async def ReportEvaluation(
        self, request: pb.Evaluation, context: grpc.aio.ServicerContext
    ) -> pb.Receipt:
        return await self._unary(context, "ReportEvaluation", request, self.c.report_evaluation)

    async def AdvertiseKeys(
        self, request: pb.KeyAdvertisement, context: grpc.aio.ServicerContext
    ) -> pb.Receipt:
        return await self._unary(context, "AdvertiseKeys", request, self.c.advertise_keys)

    async def ShareKeys(
        self, request: pb.KeyShares, context: grpc.aio.ServicerContext
    ) -> pb.Receipt:
        return await self._unary(context, "ShareKeys", request, self.c.share_keys)

    async def RevealShares(
        self, request: pb.Reveal, context: grpc.aio.ServicerContext
    ) -> pb.Receipt:
        return await self._unary(context, "RevealShares", request, self.c.reveal_shares)

    async def SignSurvivors(
        self, request: pb.Consistency, context: grpc.aio.ServicerContext
    ) -> pb.Receipt:
        return await self._unary(context, "SignSurvivors", request, self.c.sign_survivors)

    async def DeclineTask(
        self, request: pb.Decline, context: grpc.aio.ServicerContext
    ) -> pb.Receipt:
        receipt = await self._unary(context, "DeclineTask", request, self.c.decline_task)
        self.metrics.declined(request.ref.site)
        return receipt

    async def GetProgress(
        self, request: pb.ProgressRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProgressReply:
        """The job's progress, for one of its sites (its certificate's, under mutual TLS)."""
        self._received("GetProgress", request)
        try:
            self._authorise(context, request.ref.site)
            self.c.known(request.ref.job, request.ref.site)
        except UpdateRefused as e:
            await self._refuse(context, e)
        reply = pb.ProgressReply(json=progress(self.c).to_json_bytes())
        self._sent("GetProgress", reply)
        return reply

    async def ProveIdentity(
        self, request: pb.IdentityChallenge, context: grpc.aio.ServicerContext
    ) -> pb.IdentityProof:
        """Sign a site's nonce with this aggregator's certificate key, so the site can check
        the certificate against its own revocation list."""
        self._received("ProveIdentity", request)
        try:
            self._authorise(context, request.ref.site)
            self.c.known(request.ref.job, request.ref.site)
            if self.identity is None:
                raise RoundClosed(
                    "this aggregator runs without mutual TLS: it has no certificate to prove",
                    site=request.ref.site,
                )
            certificate, signature = self.identity.prove(
                request.ref.job, request.ref.site, request.nonce
            )
        except UpdateRefused as e:
            await self._refuse(context, e)
        except TlsError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        reply = pb.IdentityProof(certificate=certificate, signature=signature)
        self._sent("ProveIdentity", reply)
        return reply

    async def _unary(
        self,
        context: grpc.aio.ServicerContext,
        call: str,
        request: RefMessage,
        take: Callable[[RefMessage], None],
    ) -> pb.Receipt:
        """Authorise the caller as the request's site, then hand it over; refusals abort."""
        self._received(call, request)
        try:
            self._authorise(context, request.ref.site)
            take(request)
        except UpdateRefused as e:
            await self._refuse(context, e)
        return pb.Receipt(ref=request.ref)


class _Handlers:
    """Stands in for a server to catch the generated code's method handlers."""

    def __init__(self) -> None:
        self.service = ""
        self.methods: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, methods: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.service, self.methods = service, dict(methods)


def add_aggregator_service(service: AggregatorService, server: grpc.aio.Server) -> None:
    """The generated service, but for its two bulk calls: a download's chunks go out as
    frames encoded once (``fedkube.wire.chunk_frames``) and an update's are read in place.
    The bytes on the wire are protobuf's own."""
    caught = _Handlers()
    pb_grpc.add_AggregatorServicer_to_server(service, caught)
    methods = caught.methods
    methods["GetModel"] = grpc.unary_stream_rpc_method_handler(
        service.GetModel,
        request_deserializer=pb.ModelRequest.FromString,
        response_serializer=encode_part,
    )
    methods["SubmitUpdate"] = grpc.stream_unary_rpc_method_handler(
        service.SubmitUpdate,
        request_deserializer=decode_update_part,
        response_serializer=pb.Receipt.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(caught.service, methods),)
    )
    server.add_registered_method_handlers(caught.service, methods)
