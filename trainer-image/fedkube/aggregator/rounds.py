"""The coordinator's state: each site as the aggregator sees it, and the round that is open."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from fedkube.accumulate.base import Accumulator
from fedkube.aggregator.updates import SpooledUpdate
from fedkube.errors import DuplicateUpdate, RoundClosed
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.server import SecureSum
from fedkube.spec.progress import SCORE_KEYS, SiteSummary

# Round 0: the federated statistics, before the first training round.
STATISTICS_ROUND = 0

EventQueue = asyncio.Queue[pb.Event | None]


@dataclass
class SiteState:
    name: str
    queue: EventQueue | None = None
    last_round: int = 0
    samples: int = 0
    eval_samples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    # For monitoring: tensor bytes of the updates this process took from the site, and how
    # long after the round's first update its last update came (kept here, never in reports).
    update_bytes: int = 0
    lateness_seconds: float = 0.0

    @property
    def connected(self) -> bool:
        return self.queue is not None

    def summary(self) -> SiteSummary:
        return SiteSummary(
            connected=self.connected,
            last_round=self.last_round,
            samples=self.samples,
            eval_samples=self.eval_samples,
            **{k: v for k, v in self.metrics.items() if k in SCORE_KEYS or k == "epsilon"},
        )


@dataclass
class OpenRound:
    number: int
    stage: pb.Stage
    model_version: int
    opened_at: float
    deadline: float
    config: dict[str, float]
    evaluate: bool
    accumulator: Accumulator | None
    attempt: int = 1
    secure: SecureSum | None = None
    tasked: set[str] = field(default_factory=set)  # pushed this stage's task
    # sitesPerRound: the sites this round asks (None: every connected site).
    sample: set[str] | None = None
    receiving: dict[str, SpooledUpdate] = field(default_factory=dict)
    done: dict[str, dict[str, float]] = field(default_factory=dict)  # answered this stage
    # Sites that declined this attempt, and why (``declines``): not waited for again in it.
    declined: dict[str, str] = field(default_factory=dict)
    # Secure aggregation: the final evaluation's round, whose masked vector is only the
    # sites' evaluation counts; and the counts' unmasked totals once a round has them.
    scores_only: bool = False
    score_totals: np.ndarray | None = None
    updates: dict[str, dict[str, float]] = field(default_factory=dict)  # site -> metrics
    samples: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # secure rounds' stages
    # Secure rounds: keys for the next round (attempt 1) that came with the masked updates.
    next_keys: dict[str, pb.KeyAdvertisement] = field(default_factory=dict)
    bytes_received: int = 0
    bytes_sent: int = 0
    first_update_at: float | None = None
    # Whole updates being folded beside the loop (``folding.Folds``); once the round is
    # closing, no new one starts.
    folding: set[asyncio.Task[None]] = field(default_factory=set)
    closing: bool = False


def asked_to_answer(
    r: OpenRound | None, ref: pb.RoundRef, stage: pb.Stage, what: str, secure: bool = False
) -> OpenRound:
    """The open round, when ``ref`` names its attempt at ``stage`` (a secure round's, with
    ``secure``) and its site was asked this stage and has not answered it; else the refusal,
    which says the ``what`` is dropped."""
    site, number, attempt, name = ref.site, ref.round, ref.attempt, pb.Stage.Name(stage)
    at = (number, attempt, stage)
    if r is None or (secure and r.secure is None) or (r.number, r.attempt, r.stage) != at:
        kind = "secure-aggregation stage" if secure else "stage"
        raise RoundClosed(
            f"round {number} (attempt {attempt}) is not at {kind} {name}; the {what} is dropped",
            site=site,
            round=number,
        )
    if site in r.done or site in r.receiving:
        raise DuplicateUpdate(
            f"site {site!r} already answered stage {name} of round {number}",
            site=site,
            round=number,
        )
    if site not in r.tasked:
        raise RoundClosed(
            f"site {site!r} was not asked to answer stage {name} of round {number}",
            site=site,
            round=number,
        )
    return r


def weighted(values: list[tuple[int, dict[str, float]]], key: str) -> float | None:
    """The ``n``-weighted mean of ``key`` over the (n, metrics) pairs that have it."""
    pairs = [(n, m[key]) for n, m in values if key in m and n > 0]
    total = sum(n for n, _ in pairs)
    return sum(n * v for n, v in pairs) / total if total else None
