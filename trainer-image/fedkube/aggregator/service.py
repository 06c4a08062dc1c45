"""The gRPC face of the coordinator: calls in, refusals out as gRPC statuses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from fedkube.aggregator.coordinator import Coordinator
from fedkube.aggregator.metrics import AggregatorMetrics
from fedkube.errors import ProtocolMismatch, UnknownSite, UpdateRefused
from fedkube.proto import PROTOCOL_VERSION
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.security.tls import peer_site

log = logging.getLogger("fedkube.aggregator")
# A unary message about a round: it names its round and sender in ``ref``.
RefMessage = TypeVar("RefMessage", pb.Evaluation, pb.KeyAdvertisement, pb.KeyShares, pb.Reveal)

# Transfers served at once, each way. Every transfer in flight holds about two chunks in
# buffers; bounding them keeps the aggregator's memory flat in the number of sites (the
# others wait, holding only their flow-control window).
MAX_CONCURRENT_TRANSFERS = 4

# gRPC grows a stream's flow-control window by bandwidth probing, to several MB per stream
# on loopback; with it off, a stream that waits buffers at most the base 64 KiB window.
SERVER_OPTIONS = [("grpc.http2.bdp_probe", 0)]


class AggregatorService(pb_grpc.AggregatorServicer):
    def __init__(
        self, coordinator: Coordinator, metrics: AggregatorMetrics, tls: bool = False
    ) -> None:
        self.c = coordinator
        self.metrics = metrics
        self.tls = tls
        self._downloads = asyncio.Semaphore(MAX_CONCURRENT_TRANSFERS)
        self._uploads = asyncio.Semaphore(MAX_CONCURRENT_TRANSFERS)

    def _authorise(self, context: grpc.aio.ServicerContext, site: str) -> None:
        """With mutual TLS a connection acts only for the site its certificate names."""
        if not self.tls:
            return
        holder = peer_site(context.auth_context())
        if holder != site:
            raise UnknownSite(
                f"this connection's certificate is for {holder!r}; it cannot act for site {site!r}",
                site=site,
            )

    def _received(self, call: str, message: Any) -> None:
        self.metrics.message("received", call, message.ByteSize())

    def _sent(self, call: str, message: Any) -> None:
        self.metrics.message("sent", call, message.ByteSize())

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
            if request.protocol_version != PROTOCOL_VERSION:
                raise ProtocolMismatch(
                    f"site {request.site!r} speaks fedkube protocol "
                    f"{request.protocol_version}, this aggregator speaks {PROTOCOL_VERSION}: "
                    "run the same fedkube release at every site and at the aggregator",
                    site=request.site,
                )
            queue = self.c.connect(request.job, request.site)
        except UpdateRefused as e:
            await self._refuse(context, e)
            return
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

    async def GetModel(
        self, request: pb.ModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelPart]:
        self._received("GetModel", request)
        try:
            self._authorise(context, request.ref.site)
            header, chunks = self.c.model_for(request.ref.job, request.ref.site)
        except UpdateRefused as e:
            await self._refuse(context, e)
            return
        async with self._downloads:
            first = pb.ModelPart(header=header)
            self._sent("GetModel", first)
            yield first
            for chunk in chunks:
                self.metrics.bytes_moved("sent", len(chunk.data))
                part = pb.ModelPart(chunk=chunk)
                self._sent("GetModel", part)
                yield part

    async def SubmitUpdate(
        self, request_iterator: AsyncIterator[pb.UpdatePart], context: grpc.aio.ServicerContext
    ) -> pb.Receipt:
        async with self._uploads:
            return await self._receive_update(request_iterator, context)

    async def _receive_update(
        self, request_iterator: AsyncIterator[pb.UpdatePart], context: grpc.aio.ServicerContext
    ) -> pb.Receipt:
        reception = self.c.reception(lambda site: self._authorise(context, site))
        try:
            async for part in request_iterator:
                self._received("SubmitUpdate", part)
                if part.HasField("chunk"):
                    self.metrics.bytes_moved("received", len(part.chunk.data))
                reception.feed(part)
            received = reception.finish()
        except UpdateRefused as e:
            reception.abandon()
            await self._refuse(context, e)
            raise  # abort() raises; this line is never reached
        except BaseException:
            reception.abandon()
            raise
        assert reception.update is not None
        return pb.Receipt(ref=reception.update.header.ref, bytes_received=received)

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
