"""Who a secure round's masked-update stage leaves in the sum.

Every site whose masked update was folded is a survivor, except:
- in a round run again (its aggregator stopped after the reveal, before saving the round),
  the sites that revealed it then reveal again only for the same survivors, and say which
  with their masked update: the other senders leave this try, so that list is the one shown;
- of every dispute over a share that did not open, one side (the fewest sites,
  ``secagg.disputes``).
A site taken out has its update unfolded from the sum; from there it is dropped."""

from __future__ import annotations

import logging

from fedkube.aggregator.rounds import OpenRound
from fedkube.aggregator.updates import SpooledUpdate
from fedkube.secagg.disputes import disputes_among, sites_to_leave

log = logging.getLogger("fedkube.aggregator")


def settle(r: OpenRound, folded: dict[str, SpooledUpdate]) -> None:
    """Take out of ``r`` whom the rules above take out; every kept update is closed."""
    assert r.secure is not None
    try:
        hold_to_earlier_reveal(r, folded)
        leaving = sites_to_leave(disputes_among(r.secure.survivors, r.secure.unopened))
        for site in leaving:
            take_out(r, folded.pop(site))
        if leaving:
            log.warning(
                "round %d: shares did not open %s; taken out of the round: %s",
                *(r.number, r.secure.unopened_by_site, ", ".join(leaving)),
            )
    finally:
        for update in folded.values():
            update.close()


def hold_to_earlier_reveal(r: OpenRound, folded: dict[str, SpooledUpdate]) -> None:
    """Keep a round run again to the survivors its earlier reveal was for. When the sites
    that say so disagree, or one of their list sent nothing, nothing is taken out: they will
    decline the reveal, and the try fails."""
    assert r.secure is not None
    lists = {tuple(u.header.revealed_for) for u in folded.values() if u.header.revealed_for}
    if not lists:
        return
    if len(lists) > 1:
        log.warning(
            "round %d: sites revealed it before for different survivors (%s); they will "
            "decline this try",
            *(r.number, "; ".join(", ".join(x) for x in sorted(lists))),
        )
        return
    (wanted,) = lists
    missing = sorted(set(wanted) - r.secure.survivors)
    if missing:
        log.warning(
            "round %d was revealed before for %s; %s sent no masked update in this try, so "
            "the sites that revealed it will decline",
            *(r.number, ", ".join(wanted), ", ".join(missing)),
        )
        return
    others = sorted(r.secure.survivors - set(wanted))
    for site in others:
        take_out(r, folded.pop(site), disputed=False)
    if others:
        log.warning(
            "round %d is run again, revealed before for %s: %s leave this try",
            *(r.number, ", ".join(wanted), ", ".join(others)),
        )


def take_out(r: OpenRound, update: SpooledUpdate, disputed: bool = True) -> None:
    """A folded update back out of the sum, its site out of the round (named in the round's
    ``excluded`` when ``disputed``)."""
    assert r.secure is not None
    for tensor, start, values in update.pieces():
        r.secure.unfold(tensor, start, values)
    update.close()
    r.secure.exclude(update.site, disputed)
    for kept in (r.done, r.updates, r.samples, r.next_keys):
        kept.pop(update.site, None)
