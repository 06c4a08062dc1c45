"""Tasks a site declines, and why: the site judged the task against its own manifest and
guards (a second reveal of a round, secure-aggregation parameters that differ) and will not
answer it. The aggregator stops waiting for that site in this stage of the round, and, when
the sites left cannot make the quorum, ends the attempt at once with the sites' reasons in
its message instead of waiting out the deadline.

A decline moves nothing the site could not already do by staying silent, so it needs no more
trust than any other call: the caller must be the site (its certificate, under mutual TLS)
and the decline must name the stage the site was asked to answer. Its reason is the site's
own text: it is cut to a line of printable characters before it reaches a log or the job's
status."""

from __future__ import annotations

import logging
from typing import Protocol

from fedkube.aggregator.rounds import OpenRound, SiteState, asked_to_answer
from fedkube.proto import fedkube_pb2 as pb

log = logging.getLogger("fedkube.aggregator")

# A reason is for people: one line, enough for a sentence or two.
MAX_REASON_CHARS = 300


def clean_reason(text: str) -> str:
    """The site's reason as one printable line of at most ``MAX_REASON_CHARS``."""
    line = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if not line:
        return "no reason given"
    if len(line) > MAX_REASON_CHARS:
        return line[: MAX_REASON_CHARS - 3] + "..."
    return line


def declines_note(declined: dict[str, str]) -> str:
    """``declined by site-1 (its reason); declined by ...`` for a message, or ``""``."""
    return "; ".join(f"declined by {site} ({why})" for site, why in sorted(declined.items()))


def cannot_reach(r: OpenRound, sites: int, needed: int) -> bool:
    """Whether ``needed`` answers are out of reach: more sites declined this attempt than
    the job can spare. (Sites not connected may still join; declined ones will not answer.)"""
    return bool(r.declined) and sites - len(r.declined) < needed


class DeclineHost(Protocol):
    open: OpenRound | None

    def known(self, job: str, site: str) -> SiteState: ...

    def notify(self) -> None: ...


class TaskDeclines:
    """The coordinator's part that takes declines (a base class: it holds no state of its
    own; the declines are the open round's)."""

    def decline_task(self: DeclineHost, msg: pb.Decline) -> None:
        site, number = msg.ref.site, msg.ref.round
        self.known(msg.ref.job, site)
        r = asked_to_answer(self.open, msg.ref, msg.stage, "decline")
        why = r.declined[site] = clean_reason(msg.reason)
        log.warning(
            "round %d attempt %d: site %s declined stage %s: %s",
            *(number, r.attempt, site, pb.Stage.Name(r.stage), why),
        )
        self.notify()
