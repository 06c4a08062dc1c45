"""`fedkube aggregator`: serve one job's rounds over gRPC until it is done."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from prometheus_client import generate_latest

from fedkube import exit_codes
from fedkube.aggregator.coordinator import Coordinator
from fedkube.aggregator.metrics import LOCAL_NAMESPACE, AggregatorMetrics
from fedkube.aggregator.outputs import write_outputs
from fedkube.aggregator.persistence import resume
from fedkube.aggregator.report import progress
from fedkube.aggregator.service import AggregatorService, add_aggregator_service, server_options
from fedkube.aggregator.transfer_pace import MIN_TRANSFER_KIB_PER_SECOND, UPLOAD_WINDOW_KIB
from fedkube.errors import JobFailed
from fedkube.security.aggregator_identity import AggregatorIdentity
from fedkube.security.revocation import Revocations
from fedkube.security.tls import TlsError, is_loopback, server_credentials
from fedkube.spec.job import FederatedJob
from fedkube.strategy import build_strategy
from fedkube.transport.http_endpoints import progress_token, serve_http
from fedkube.wire.tensors import Params

log = logging.getLogger("fedkube.aggregator")
T = TypeVar("T")
# The job's first model, from (features, classes). The caller decides how: built in a child
# process (``fedkube.models.first_model``), so that this process never imports torch, or in
# process where torch is loaded already (`fedkube run`'s forks share it).
FirstModel = Callable[[int, int], Params]

# mallopt's parameter number for the most arenas (malloc.h).
M_ARENA_MAX = -8
# After the last round, how long to let sites read their final word before stopping.
FINISH_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class AggregatorOptions:
    host: str
    port: int
    http_port: int
    checkpoint_dir: Path
    output_dir: Path
    # Keep serving /progress and the final word this long after the job ends.
    linger_seconds: float = FINISH_GRACE_SECONDS
    # ca.crt, tls.crt, tls.key: mutual TLS, sites known by their certificates.
    tls_dir: Path | None = None
    # Clear text away from loopback must be asked for (a mesh that encrypts, say).
    allow_plaintext: bool = False
    # Round 0 only: the federated statistics, no training (`fedkube stats`).
    statistics_only: bool = False
    # The least average rate (KiB/s) a transfer holding a slot must keep (0: none).
    min_transfer_kib: float = MIN_TRANSFER_KIB_PER_SECOND
    # Each upload's flow-control window (KiB): what a site may send ahead of the reads.
    upload_window_kib: int = UPLOAD_WINDOW_KIB
    # The job's namespace, as its metrics' fedjob_namespace label (the operator's too).
    job_namespace: str = LOCAL_NAMESPACE


def release_freed_memory() -> None:
    """Hand the heap's freed pages back to the OS, in every malloc arena.

    A round frees its message buffers, but glibc keeps freed heap memory for reuse, in
    per-thread arenas, so the resident size would creep up round after round. Trimming once
    a round keeps it near one model's size; the alternative, a low mmap threshold, maps and
    zero-fills every 1 MiB buffer afresh and cut transfers to a third.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def limit_malloc_arenas() -> None:
    """At most two malloc arenas. glibc gives threads that allocate at once arenas of their
    own (up to 8 per core), and gRPC's threads and the fold threads each keep freed buffers
    in theirs: measured with 10 to 100 synthetic sites, two arenas take the round's peak
    from 3.1-3.9x the model to 2.8-3.2x, no slower. Called before the server's threads start."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 2)


def allow_a_connection_per_site(sites: int) -> None:
    """Each site holds a connection, and each connection a file descriptor: raise the soft
    limit (often 1,024) to the hard one, so that a thousand sites do not exhaust it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    if soft != resource.RLIM_INFINITY and soft < 2 * sites + 64:
        log.warning(
            "the open-file limit is %d, and %d sites need about %d; raise it (ulimit -n)",
            soft,
            sites,
            2 * sites + 64,
        )


def on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> Callable[[], T]:
    """Run ``fn`` on the event loop's thread, where the coordinator's state is changed."""

    async def call() -> T:
        return fn()

    return lambda: asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)


def _coordinator(
    job: FederatedJob, opts: AggregatorOptions, first_model: FirstModel
) -> Coordinator:
    features, classes = job.spec.input_shape()
    coordinator = Coordinator(
        job,
        first_model(features, classes),
        build_strategy(job.spec),
        None if opts.statistics_only else opts.checkpoint_dir,
        statistics_only=opts.statistics_only,
    )
    resume(coordinator)
    coordinator.on_succeeded = lambda c: write_outputs(c, opts.output_dir)
    return coordinator


def _grpc_server(
    service: AggregatorService, opts: AggregatorOptions
) -> tuple[grpc.aio.Server, int]:
    if opts.tls_dir is None and not (opts.allow_plaintext or is_loopback(opts.host)):
        raise TlsError(
            f"the aggregator would listen on {opts.host} in clear text: give --tls-dir (mutual "
            "TLS), listen on loopback, or pass --allow-plaintext to accept it"
        )
    server = grpc.aio.server(options=server_options(opts.upload_window_kib))
    add_aggregator_service(service, server)
    address = f"{opts.host}:{opts.port}"
    if opts.tls_dir is not None:
        bound = server.add_secure_port(address, server_credentials(opts.tls_dir))
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise JobFailed(f"cannot listen on {opts.host}:{opts.port}; is the port taken?")
    return server, bound


async def _run_until_done(coordinator: Coordinator, linger_seconds: float) -> int:
    """Run the job; stop early on SIGTERM or SIGINT. The exit code says how it ended."""
    loop = asyncio.get_running_loop()
    runner = asyncio.ensure_future(coordinator.run())
    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        runner.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    name = coordinator.job.name
    signalled = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({runner, signalled}, return_when=asyncio.FIRST_COMPLETED)
    # Python 3.11's wait_for can swallow a cancellation that lands as the awaited event
    # fires (gh-86296): the coordinator then runs on. Cancel until it has stopped.
    while stopping.is_set() and not runner.done():
        runner.cancel()
        await asyncio.wait({runner}, timeout=0.5)
    signalled.cancel()
    try:
        await runner
        model = coordinator.result.model_path if coordinator.result else "?"
        log.info("job %s succeeded; model at %s", name, model)
        code = exit_codes.OK
    except JobFailed as e:
        log.error("job %s failed: %s", name, e)
        code = exit_codes.FAILED
    except asyncio.CancelledError:
        log.warning("stopped by signal after round %d", coordinator.rounds_completed)
        return exit_codes.TERMINATED
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), linger_seconds)
    return code


async def serve(job: FederatedJob, opts: AggregatorOptions, first_model: FirstModel) -> int:
    limit_malloc_arenas()
    allow_a_connection_per_site(len(job.spec.sites))
    coordinator = _coordinator(job, opts, first_model)
    coordinator.round_closed_hooks.append(lambda record: release_freed_memory())
    metrics = AggregatorMetrics(coordinator, opts.job_namespace)
    service = AggregatorService(
        coordinator,
        metrics,
        tls=opts.tls_dir is not None,
        revocations=Revocations(opts.tls_dir) if opts.tls_dir is not None else None,
        identity=AggregatorIdentity.from_folder(opts.tls_dir) if opts.tls_dir else None,
        consortium=job.spec.security.mutual_tls.consortium
        if job.spec.security.mutual_tls is not None
        else None,
        min_transfer_rate=opts.min_transfer_kib * 1024,
    )
    server, bound = _grpc_server(service, opts)
    await server.start()
    loop = asyncio.get_running_loop()
    http = serve_http(
        opts.host,
        opts.http_port,
        on_loop(loop, lambda: generate_latest(metrics.registry)),
        on_loop(loop, lambda: progress(coordinator).to_json_bytes()),
        progress_token(),
    )
    log.info(
        "aggregator for job %s on %s:%d (http %d), %d rounds left",
        job.name,
        opts.host,
        bound,
        opts.http_port,
        job.spec.rounds - coordinator.rounds_completed,
    )
    code = await _run_until_done(coordinator, opts.linger_seconds)
    await server.stop(grace=0.5)
    http.shutdown()
    return code
