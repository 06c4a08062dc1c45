"""Leader election for replicas of the operator: one reconciles, the others stand by.

A replica blocks in ``wait_until_leader`` until it holds the Lease, then renews it from a
thread. A leader that cannot renew before its lease would lapse stops its process (the
kubelet restarts it as a standby): two replicas never reconcile at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fedkube_operator.kube import LeaseStore
from fedkube_operator.lease import (
    LEASE_SECONDS,
    RENEW_SECONDS,
    RETRY_SECONDS,
    LeaseRecord,
    may_take,
    taken,
)

log = logging.getLogger("fedkube.operator.leader")


class LeaderElection:
    def __init__(self, store: LeaseStore, identity: str) -> None:
        self.store = store
        self.identity = identity
        self.last_renewed = 0.0
        self.stopped = threading.Event()

    def try_lead(self) -> bool:
        """Take or renew the lease; True while this replica holds it."""
        try:
            spec, version = self.store.read()
            lease = LeaseRecord.from_spec(spec)
            now = datetime.now(UTC)
            if not may_take(lease, self.identity, now):
                return False
            if not self.store.write(taken(lease, self.identity, now), version):
                return False
        except Exception as e:  # an unreachable API server: not the leader this time
            log.warning("lease %s/%s: %s", self.store.namespace, self.store.name, e)
            return False
        self.last_renewed = time.monotonic()
        return True

    def release(self) -> None:
        """Let the lease go on a clean stop, so a standby leads at once, not when it lapses."""
        self.stopped.set()  # no renewal takes it back
        try:
            spec, version = self.store.read()
            if spec is not None and spec.get("holderIdentity") == self.identity:
                self.store.write({**spec, "holderIdentity": None, "renewTime": None}, version)
                log.info("released the lease %s", self.store.name)
        except Exception as e:
            log.warning("could not release the lease %s: %s", self.store.name, e)

    def wait_until_leader(self, stop: threading.Event | None = None) -> bool:
        announced = False
        while not (stop and stop.is_set()):
            if self.try_lead():
                log.info("leading as %s (lease %s)", self.identity, self.store.name)
                return True
            if not announced:
                log.info("standing by as %s: another replica leads", self.identity)
                announced = True
            time.sleep(RETRY_SECONDS)
        return False

    def keep_leading(self, on_lost: Callable[[], None]) -> threading.Thread:
        """Renew from a thread; ``on_lost`` once the lease could lapse unrenewed."""

        def renew() -> None:
            while not self.stopped.wait(RENEW_SECONDS):
                if self.try_lead():
                    continue
                if time.monotonic() - self.last_renewed > LEASE_SECONDS - RENEW_SECONDS:
                    log.error("lost the lease %s: stopping, to stand by again", self.store.name)
                    on_lost()
                    return

        thread = threading.Thread(target=renew, name="lease-renewal", daemon=True)
        thread.start()
        return thread


@contextlib.contextmanager
def standby_health(port: int) -> Iterator[None]:
    """/healthz while standing by (kopf serves it once this replica leads)."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.startswith("/healthz")
            self.send_response(200 if ok else 404)
            self.end_headers()
            if ok:
                self.wfile.write(b"standing by\n")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
