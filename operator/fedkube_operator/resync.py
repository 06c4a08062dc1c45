"""When a job's timer tick is worth a full reconcile.

A full reconcile reads what exists of the job from the API server (pods, Service, ConfigMap,
claim, approvals: six requests) and writes its status. Done for every job on every tick, a
hundred jobs kept one operator busy on API round trips: each job was reconciled every 4.6 s
instead of 2 s, and its status trailed its aggregator (bench/operator_load.py). Most ticks
change nothing, so a tick first asks what is cheap: did the aggregator's /progress change (an
HTTP read of the aggregator, no API request), did a watch event touch one of the job's objects,
did the site's approvals change, is a periodic resync due. Only then is the job reconciled.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from dataclasses import dataclass, field

from fedkube_operator.labels import LABEL_JOB, LABEL_JOB_NAMESPACE

# The periodic resync: a change no watch event shows (an object of the job's edited by hand
# outside the namespaces watched, a dataset ledger filling up) is caught at least this often.
RESYNC_SECONDS = 30.0

JobKey = tuple[str, str]  # (namespace, name)


@dataclass
class JobClock:
    """What the operator remembers of one job between ticks (lost on restart: the first
    tick after one is a full reconcile)."""

    last_full: float = -math.inf
    progress_url: str | None = None
    progress: str | None = None  # the last /progress read, as JSON
    approvals: str = ""  # fingerprint of the approvals the last full reconcile read
    # Jobs applied together would resync together, a burst of API requests each period:
    # each job's period is stretched by its own fraction.
    jitter: float = field(default_factory=lambda: random.uniform(0.0, 0.25))


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def full_reconcile_due(
    clock: JobClock,
    now: float,
    progress: str | None,
    approvals: str,
    touched: bool,
    resync_seconds: float = RESYNC_SECONDS,
) -> bool:
    """Whether this tick must reconcile in full; ``resync_seconds`` 0 makes every tick one
    (how the operator worked before watches fed it)."""
    return (
        touched
        or now - clock.last_full >= resync_seconds * (1 + clock.jitter)
        or progress != clock.progress
        or approvals != clock.approvals
    )


def owning_job(namespace: str, labels: dict[str, str]) -> JobKey | None:
    """The job an object belongs to, from its labels: in the job's namespace, or in the
    site's (where the job's namespace is a label)."""
    job = labels.get(LABEL_JOB)
    if not job:
        return None
    return (labels.get(LABEL_JOB_NAMESPACE) or namespace, job)


class Touched:
    """Jobs whose objects a watch event touched since their last tick (thread-safe: kopf
    delivers events on its loop and runs timers in threads)."""

    def __init__(self) -> None:
        self._jobs: set[JobKey] = set()
        self._lock = threading.Lock()

    def mark(self, job: JobKey) -> None:
        with self._lock:
            self._jobs.add(job)

    def take(self, job: JobKey) -> bool:
        """Whether the job was touched; forgets it."""
        with self._lock:
            if job in self._jobs:
                self._jobs.discard(job)
                return True
            return False
