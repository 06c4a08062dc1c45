"""The job's progress, relayed by a trainer whose aggregator is at another organisation.

That cluster's operator follows the job through its own trainer: the trainer asks the
aggregator over its authenticated channel (mutual TLS across organisations) and serves the
answer on its pod's /progress, so no progress crosses organisations in clear text or from an
unauthenticated server. Fetched at most every two seconds, refused above the size limit.
"""

from __future__ import annotations

import logging
import threading
import time

from fedkube.errors import FedkubeError
from fedkube.transport.link import SiteLink
from fedkube.transport.progress_client import MAX_PROGRESS_BYTES

log = logging.getLogger("fedkube.trainer")


class ProgressRelay:
    def __init__(self, link: SiteLink, job: str, site: str, max_age: float = 2.0) -> None:
        self.link, self.job, self.site, self.max_age = link, job, site, max_age
        self._lock = threading.Lock()
        self._body: bytes | None = None
        self._fetched = 0.0

    def body(self, refresh: bool = False) -> bytes | None:
        """The latest progress JSON (None before the first answer); ``refresh`` asks now."""
        with self._lock:
            if refresh or time.monotonic() - self._fetched >= self.max_age:
                self._fetched = time.monotonic()
                try:
                    body = self.link.progress(self.job, self.site)
                except FedkubeError as e:
                    log.debug("progress not relayed: %s", e)
                    body = None
                if body is not None and len(body) <= MAX_PROGRESS_BYTES:
                    self._body = body
            return self._body
