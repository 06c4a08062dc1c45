"""The aggregator's part in one round of secure aggregation: it relays keys and sealed shares,
sums masked updates mod 2^32, and removes the masks of the sum once enough sites reveal
their shares. It never holds a site's update in the clear: each masked update carries a
self mask whose seed is only ever rebuilt for sites whose update is already in the sum.

The sets follow Bonawitz et al. 2017: ``advertised`` (U1) sent keys, ``sharers`` (U2) sent
shares, ``survivors`` (U3) sent masked updates, and ``revealers`` answered the unmasking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedkube.errors import SecureAggregationError
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg import keys, shamir
from fedkube.secagg.encoding import FixedPoint, offsets
from fedkube.secagg.roster import check_roster, site_weights

PUBLIC_KEY_BYTES = 32


class SecureSum:
    def __init__(self, context: keys.Context, params: pb.SecAggParams, sizes: Sequence[int]):
        if params.threshold < 2:
            raise ValueError("secure aggregation needs a threshold of at least 2")
        self.context = context
        self.params = params
        self.sizes = list(sizes)
        self.advertised: dict[str, pb.KeyAdvertisement] = {}
        self.roster: list[pb.SiteKeys] = []
        self.sharers: dict[str, pb.KeyShares] = {}
        self.survivors: set[str] = set()
        self.revealed: dict[str, pb.Reveal] = {}
        # Revealers whose shares were off the polynomial the others agreed on (named in the
        # round's record; the secrets were rebuilt without them).
        self.faulty: set[str] = set()
        self.consistency: dict[str, bytes] = {}  # survivor -> its signature over the list
        # Survivor -> the senders whose shares did not open there (their pairs are not in
        # its mask); and the survivors taken out of the sum to settle those disputes.
        self.unopened: dict[str, set[str]] = {}
        self.excluded: list[str] = []
        self._sums: list[np.ndarray] | None = None

    # -- stage 1: keys -----------------------------------------------------------------------

    @staticmethod
    def check_keys(msg: pb.KeyAdvertisement, params: pb.SecAggParams) -> None:
        for name in ("share_public_key", "mask_public_key"):
            key = getattr(msg, name)
            if len(key) != PUBLIC_KEY_BYTES:
                raise SecureAggregationError(f"{name} must be a 32-byte X25519 public key")
            # A low-order point agrees an all-zero secret with anyone: in the roster it would
            # make every other site's exchange fail. Refused here, it costs only its sender.
            if not keys.usable_public_key(key):
                raise SecureAggregationError(f"{name} is not a usable X25519 public key")
        if msg.num_samples <= 0 and not params.equal_weights:
            raise SecureAggregationError("num_samples must be positive")

    def advertise(self, msg: pb.KeyAdvertisement) -> None:
        if self.roster:
            raise SecureAggregationError("the roster is closed; keys come too late")
        if msg.ref.site in self.advertised:
            raise SecureAggregationError(f"site {msg.ref.site!r} already advertised its keys")
        self.check_keys(msg, self.params)
        self.advertised[msg.ref.site] = msg

    def withdraw(self, site: str) -> None:
        """Forget a site's keys before the roster closes (its process restarted)."""
        if self.roster:
            raise SecureAggregationError("the roster is closed; keys cannot be withdrawn")
        self.advertised.pop(site, None)

    @property
    def signed(self) -> bool:
        """The sites signed their keys (mutual TLS): a consistency stage precedes unmasking."""
        return bool(self.roster) and all(s.signature for s in self.roster)

    def add_consistency(self, msg: pb.Consistency) -> None:
        """A survivor's signature over the survivors' list, relayed to all with UNMASK."""
        survivors, _ = self.unmask_request()
        if msg.ref.site not in survivors:
            raise SecureAggregationError(f"site {msg.ref.site!r} is not a survivor of this round")
        self.consistency[msg.ref.site] = msg.signature

    def consistency_signatures(self) -> list[pb.SurvivorSignature]:
        return [
            pb.SurvivorSignature(site=s, signature=v) for s, v in sorted(self.consistency.items())
        ]

    def close_roster(self, sites: Sequence[str]) -> list[pb.SiteKeys]:
        """Fix who takes part, in name order (the Shamir x-coordinates)."""
        self.roster = [
            pb.SiteKeys(
                site=name,
                index=i,
                share_public_key=self.advertised[name].share_public_key,
                mask_public_key=self.advertised[name].mask_public_key,
                num_samples=max(self.advertised[name].num_samples, 0),
                # Relayed as the site sent them: every other site checks them.
                certificate=self.advertised[name].certificate,
                signature=self.advertised[name].signature,
            )
            for i, name in enumerate(sorted(sites), start=1)
        ]
        check_roster(self.roster, self.params.threshold)
        return self.roster

    # -- stage 2: sealed shares --------------------------------------------------------------

    def add_shares(self, msg: pb.KeyShares) -> None:
        names = {s.site for s in self.roster}
        if msg.ref.site not in names:
            raise SecureAggregationError(f"site {msg.ref.site!r} is not in this round's roster")
        if msg.ref.site in self.sharers:
            raise SecureAggregationError(f"site {msg.ref.site!r} already sent its shares")
        recipients = [s.recipient for s in msg.shares]
        if any(s.sender != msg.ref.site for s in msg.shares) or sorted(recipients) != sorted(
            names - {msg.ref.site}
        ):
            raise SecureAggregationError(
                f"site {msg.ref.site!r} must send one share to each other site of the roster, "
                "in its own name"
            )
        self.sharers[msg.ref.site] = msg

    def inbox(self, site: str) -> list[pb.EncryptedShare]:
        return [
            share
            for sender, msg in sorted(self.sharers.items())
            if sender != site
            for share in msg.shares
            if share.recipient == site
        ]

    # -- stage 3: masked updates -------------------------------------------------------------

    def may_submit(self, site: str) -> None:
        if site not in self.sharers:
            raise SecureAggregationError(
                f"site {site!r} did not share its keys this round; its masked update could "
                "never be unmasked"
            )

    def fold(self, tensor: int, start: int, values: np.ndarray) -> None:
        if self._sums is None:
            self._sums = [np.zeros(n, dtype=np.uint32) for n in self.sizes]
        target = self._sums[tensor][start : start + values.size]
        target += values.astype(np.uint32, copy=False)  # wraps mod 2^32, as the masks do

    def note_unopened(self, site: str, senders: Sequence[str]) -> None:
        """What a masked update says did not open at its site; checked before it is folded."""
        named, senders_to_it = set(senders), set(self.sharers) - {site}
        if len(named) != len(senders) or not named <= senders_to_it:
            raise SecureAggregationError(
                f"site {site!r} names shares that did not open from sites that sent it none: "
                f"{', '.join(sorted(named - senders_to_it)) or 'a repeat'}"
            )
        if named:
            self.unopened[site] = named

    @property
    def unopened_by_site(self) -> dict[str, list[str]]:
        """Each survivor's unopened senders, sorted, as the round's record names them."""
        return {site: sorted(peers) for site, peers in sorted(self.unopened.items())}

    def unfold(self, tensor: int, start: int, values: np.ndarray) -> None:
        """Take a folded piece back out (a site leaving over a dispute)."""
        assert self._sums is not None
        target = self._sums[tensor][start : start + values.size]
        target -= values.astype(np.uint32, copy=False)

    def commit(self, site: str) -> None:
        self.survivors.add(site)

    def exclude(self, site: str, disputed: bool = True) -> None:
        """A survivor whose update was taken back out of the sum: from here it is dropped.
        One ``disputed`` (a share that did not open) is named in ``excluded``."""
        self.survivors.discard(site)
        self.unopened.pop(site, None)
        if disputed:
            self.excluded.append(site)

    def unmask_request(self) -> tuple[list[str], list[str]]:
        """(survivors, dropped) as sent to every survivor."""
        return sorted(self.survivors), sorted(set(self.sharers) - self.survivors)

    # -- stage 4: reveal and unmask ----------------------------------------------------------

    def add_reveal(self, msg: pb.Reveal) -> None:
        if msg.ref.site not in self.survivors:
            raise SecureAggregationError(
                f"site {msg.ref.site!r} sent no masked update; only survivors reveal shares"
            )
        if msg.ref.site in self.revealed:
            raise SecureAggregationError(f"site {msg.ref.site!r} already revealed its shares")
        survivors, dropped = self.unmask_request()
        x = next(s.index for s in self.roster if s.site == msg.ref.site)
        seeds = [s.owner for s in msg.self_seed_shares]
        masks = [s.owner for s in msg.mask_key_shares]
        paired = [o for o in dropped if o not in self.unopened.get(msg.ref.site, ())]
        pairs = [p.peer for p in msg.pair_seeds]
        if seeds != survivors or masks != paired or pairs != paired:
            raise SecureAggregationError(
                f"site {msg.ref.site!r} revealed shares for other sites than were asked"
            )
        if any(s.x != x for s in [*msg.self_seed_shares, *msg.mask_key_shares]):
            raise SecureAggregationError(f"site {msg.ref.site!r} sent shares at another x than {x}")
        self.revealed[msg.ref.site] = msg

    def can_unmask(self) -> bool:
        return len(self.revealed) >= self.params.threshold

    def unmask(self) -> tuple[list[np.ndarray], float]:
        """The survivors' weighted mean (float64, one flat array a tensor) and the share of
        the roster's weight behind it."""
        return self.decode_mean(self.unmasked_sum())

    def decode_mean(self, sums: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        """Unmasked fixed-point sums of weighted values as their mean, and the weight."""
        weights = site_weights(self.roster, self.params)
        weight = sum(weights[s] for s in self.survivors)
        fixed = FixedPoint(self.params.clip_range)
        return [fixed.decode(s) / weight for s in sums], weight

    def unmasked_sum(self) -> list[np.ndarray]:
        """The survivors' fixed-point sum with every mask removed (uint32, one flat array a
        tensor). Raises SecureAggregationError, naming the problem, when the shares are too
        few or disagree."""
        if not self.can_unmask():
            raise SecureAggregationError(
                f"{len(self.revealed)} sites revealed shares; {self.params.threshold} are needed"
            )
        if not self.survivors or self._sums is None:
            raise SecureAggregationError("no masked update arrived")
        threshold = self.params.threshold
        survivors, dropped = self.unmask_request()
        seeds = [self._rebuild(o, "self_seed_shares", threshold) for o in survivors]
        # A dropped site's pairwise masks with the survivors that hold them (those its share
        # opened at) did not cancel: redo each (seed, whether the survivor added it).
        corrections: list[tuple[bytes, bool]] = []
        for gone in dropped:
            holders = [s for s in survivors if gone not in self.unopened.get(s, ())]
            if holders:
                corrections += self._pair_corrections(gone, holders, threshold)
        # What the survivors added comes off: their self masks, and the dropped sites' pairs.
        removals = [(seed, False) for seed in seeds] + [(s, not added) for s, added in corrections]
        sums, self._sums = self._sums, None
        for start, flat in zip(offsets(self.sizes), sums, strict=True):
            keys.apply_masks(flat, start, removals)
        return sums

    def _pair_corrections(
        self, gone: str, holders: Sequence[str], threshold: int
    ) -> list[tuple[bytes, bool]]:
        """The seeds of the pairs between dropped site ``gone`` and the survivors whose masks
        hold them, each with whether the survivor added it: from ``gone``'s mask key, rebuilt
        from a threshold of shares and checked against the key it advertised; or, when fewer
        shares exist (its shares opened at too few sites), from the seeds the holders
        revealed, which needs every holder's."""
        by_name = {s.site: s for s in self.roster}
        shares = sum(
            1 for m in self.revealed.values() for s in m.mask_key_shares if s.owner == gone
        )
        if shares >= threshold:
            secret = keys.private_from_bytes(self._rebuild(gone, "mask_key_shares", threshold))
            if keys.public_bytes(secret) != by_name[gone].mask_public_key:
                # Even from exactly t shares a wrong one shows here: the key is committed.
                raise SecureAggregationError(
                    f"the shares of site {gone!r}'s mask key rebuild a key it did not "
                    "advertise: a revealer sent a wrong share"
                )
            seeds = {
                s: keys.agree(secret, by_name[s].mask_public_key, self.context, "mask")
                for s in holders
            }
            # A revealer whose pair seed differs from the rebuilt key's is named too.
            self.faulty.update(
                site
                for site, msg in self.revealed.items()
                for p in msg.pair_seeds
                if p.peer == gone and site in seeds and p.seed != seeds[site]
            )
        else:
            seeds = {
                site: p.seed
                for site, msg in self.revealed.items()
                for p in msg.pair_seeds
                if p.peer == gone
            }
        missing = [s for s in holders if s not in seeds]
        if missing:
            raise SecureAggregationError(
                f"the masks between dropped site {gone!r} and {', '.join(missing)} cannot be "
                f"removed: {shares} shares of its key arrived, {threshold} are needed, and "
                "those survivors revealed no seed of the pair"
            )
        return [(seeds[s], by_name[s].index < by_name[gone].index) for s in holders]

    def _rebuild(self, owner: str, field: str, threshold: int) -> bytes:
        """``owner``'s secret from the revealed shares; a revealer whose share is off the
        polynomial the others agree on is named in ``faulty``, and the secret rebuilt
        without it."""
        shares, sender = {}, {}
        for site, msg in self.revealed.items():
            for s in getattr(msg, field):
                if s.owner == owner:
                    shares[s.x], sender[s.x] = s.y, site
        try:
            secret, wrong = shamir.robust_combine(shares, threshold)
        except SecureAggregationError as e:
            raise SecureAggregationError(f"the shares of site {owner!r}'s secret: {e}") from None
        self.faulty.update(sender[x] for x in wrong)
        return secret
