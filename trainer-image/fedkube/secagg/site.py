"""One site's part in one round of secure aggregation, as a state machine over typed messages.

    advertisement() -> share_keys(roster) -> masked_update(inbox, update)
        [-> sign_survivors(survivors), with signed keys] -> reveal(...)

The site checks what the aggregator relays at each step and refuses (SecureAggregationError)
what would let the aggregator unmask it alone: a roster without this site's own keys or below
the threshold, a request to reveal both secrets of one site, or a second reveal. A peer's
share that does not open costs only that pair: the peer is left out of this site's mask and
named with its masked update. Nothing here does I/O; the trainer's client sends the messages.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from google.protobuf.message import DecodeError

from fedkube.errors import SecureAggregationError
from fedkube.privacy.secure_noise import add_gaussian_noise
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg import keys, shamir
from fedkube.secagg.encoding import FixedPoint, offsets
from fedkube.secagg.roster import check_roster, manifest_problem, site_weights
from fedkube.secagg.signed_keys import SigningIdentity, signed_by, survivors_bytes


def bundle_associated_data(context: keys.Context, sender: str, recipient: str) -> bytes:
    return context.label("share") + f"/{sender}->{recipient}".encode()


class SiteSession:
    def __init__(
        self,
        job: str,
        site: str,
        round: int,
        attempt: int,
        params: pb.SecAggParams,
        *,
        identity: SigningIdentity | None = None,
        job_sites: Mapping[str, int | None] | None = None,
    ) -> None:
        self.site = site
        self.params = params
        self.context = keys.Context(job, round, attempt)
        # With mutual TLS: this site signs its keys, and refuses any roster entry its site
        # did not sign (key substitution).
        self.identity = identity
        # The sites this site's own manifest lists, with the most samples each may claim
        # (sites[].maxSamples): a roster naming another, or giving one more, is refused.
        self.job_sites = job_sites
        self._share_key = keys.new_private_key()
        self._mask_key = keys.new_private_key()
        self._self_seed = os.urandom(keys.KEY_BYTES)
        self._roster: dict[str, pb.SiteKeys] = {}
        self._held: dict[str, pb.ShareBundle] = {}  # owner -> the shares this site holds
        self._participants: list[str] = []
        self._unopened: list[str] = []  # senders whose shares did not open here
        self._channel_keys: dict[str, bytes] = {}  # peer -> the key its shares are sealed with
        # The mask does not depend on the update: made ahead (while the others share, or the
        # aggregator unmasks the last round) for the case where every roster site shares its
        # keys, and checked against that at use.
        self._prepared: tuple[list[str], list[int], list[np.ndarray]] | None = None
        self.stage = "new"
        self.clipped_values = 0
        self._signed_survivors: list[str] | None = None
        self._signed_model = b""

    def advertisement(self, model_version: int, num_samples: int) -> pb.KeyAdvertisement:
        self._expect("new", "advertised")
        message = pb.KeyAdvertisement(
            ref=self.context.ref(self.site),
            model_version=model_version,
            share_public_key=keys.public_bytes(self._share_key),
            mask_public_key=keys.public_bytes(self._mask_key),
            num_samples=num_samples,
        )
        if self.identity is not None:
            self.identity.sign(message, self.context)
        return message

    def share_keys(self, roster: Sequence[pb.SiteKeys]) -> pb.KeyShares:
        self._expect("advertised", "shared")
        by_name = check_roster(roster, self.params.threshold)
        me = by_name.get(self.site)
        if (
            me is None
            or me.share_public_key != keys.public_bytes(self._share_key)
            or me.mask_public_key != keys.public_bytes(self._mask_key)
        ):
            raise SecureAggregationError(
                f"the roster does not hold site {self.site!r}'s own keys; it is not answered"
            )
        problem = manifest_problem(roster, self.job_sites, self.params.equal_weights)
        if problem is not None:
            raise SecureAggregationError(problem)
        if self.identity is not None:
            for entry in roster:
                self.identity.check(entry, self.context)
        self._roster = by_name
        xs = {s.site: s.index for s in roster}
        threshold = self.params.threshold
        mask_shares = shamir.split(keys.private_bytes(self._mask_key), list(xs.values()), threshold)
        seed_shares = shamir.split(self._self_seed, list(xs.values()), threshold)
        out = pb.KeyShares(ref=self.context.ref(self.site))
        for peer in roster:
            bundle = pb.ShareBundle(
                ref=self.context.ref(self.site),
                recipient=peer.site,
                mask_key_share=mask_shares[peer.index],
                self_seed_share=seed_shares[peer.index],
            )
            if peer.site == self.site:
                self._held[self.site] = bundle
                continue
            key = keys.agree(self._share_key, peer.share_public_key, self.context, "share")
            self._channel_keys[peer.site] = key  # the same key opens what the peer sends
            nonce, sealed = keys.seal(
                key,
                bundle.SerializeToString(),
                bundle_associated_data(self.context, self.site, peer.site),
            )
            out.shares.append(
                pb.EncryptedShare(
                    sender=self.site, recipient=peer.site, nonce=nonce, ciphertext=sealed
                )
            )
        return out

    def receive_shares(self, inbox: Sequence[pb.EncryptedShare]) -> list[str]:
        """Open the shares other sites sent this one; the senders whose shares opened, with
        this site, are the participants whose masks this site's update carries. A share that
        does not open leaves its sender out of this site's mask and is named in ``unopened``
        (sent with the masked update): one bad peer costs that pair, not this site's round."""
        self._expect("shared", "received")
        for item in inbox:
            if (
                item.sender not in self._roster
                or item.recipient != self.site
                or item.sender in self._held
                or item.sender in self._unopened
            ):
                raise SecureAggregationError(
                    f"site {self.site!r} was relayed a share from {item.sender!r} to "
                    f"{item.recipient!r}, which the roster does not allow"
                )
            bundle = self._open(item)
            if bundle is None:
                self._unopened.append(item.sender)
            else:
                self._held[item.sender] = bundle
        self._participants = sorted(self._held)
        if len(self._participants) < self.params.threshold:
            raise SecureAggregationError(
                f"only {len(self._participants)} sites shared keys that opened here, fewer than "
                f"the threshold {self.params.threshold}"
                + (f"; shares of {', '.join(self.unopened)} did not open" if self._unopened else "")
            )
        return self._participants

    @property
    def unopened(self) -> list[str]:
        """The senders whose shares did not open at this site."""
        return sorted(self._unopened)

    def _open(self, item: pb.EncryptedShare) -> pb.ShareBundle | None:
        """The bundle sealed in ``item``, or None when it does not decrypt, does not parse,
        or names another round or recipient than its envelope."""
        key = self._channel_keys[item.sender]
        try:
            plain = keys.open_sealed(
                key,
                item.nonce,
                item.ciphertext,
                bundle_associated_data(self.context, item.sender, self.site),
            )
            bundle: pb.ShareBundle = pb.ShareBundle.FromString(plain)
        except (SecureAggregationError, DecodeError):
            return None
        if bundle.ref != self.context.ref(item.sender) or bundle.recipient != self.site:
            return None
        if not (bundle.mask_key_share and bundle.self_seed_share):
            return None
        return bundle

    def prepare_mask(self, sizes: Sequence[int]) -> None:
        """Make the mask for updates of these tensor sizes now, assuming every site of the
        roster shares its keys; ``masked_update`` uses it when that holds."""
        if self.stage not in ("shared", "received"):
            raise SecureAggregationError("the mask can be prepared only once keys are shared")
        everyone = sorted(self._roster)
        self._prepared = (everyone, list(sizes), self._mask(everyone, sizes))

    def masked_update(
        self, update: Sequence[np.ndarray], counts: Sequence[np.ndarray] = ()
    ) -> list[np.ndarray]:
        """The update (model delta and extras, in order) clipped, noised, weighted, encoded
        and masked; then any ``counts`` (uint32 that must add up exactly: the evaluation's)
        masked as they are."""
        return self.masked_release(self.protect(update), counts)

    def protect(self, update: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The update as it may be released: refused when not finite, clipped and noised as
        the parameters say, in its tensors' shapes. A site keeps this (``Contribution``) so
        that a round run again gets the same release, never a second draw of the noise."""
        flat = [np.asarray(a).reshape(-1) for a in update]  # encoding copies to float64
        if not all(np.isfinite(v).all() for v in flat):
            # Fixed-point encoding would turn NaN into a valid-looking value in the sum.
            raise SecureAggregationError(
                "the update holds NaN or Inf; it is neither masked nor sent"
            )
        if self.params.clip_norm > 0 or self.params.noise_stddev > 0:
            flat = [v.astype(np.float64) for v in flat]
        if self.params.clip_norm > 0:
            norm = math.sqrt(sum(float(np.dot(v, v)) for v in flat))
            factor = min(1.0, self.params.clip_norm / norm) if norm > 0 else 1.0
            flat = [v * factor for v in flat]
        if self.params.noise_stddev > 0:
            # Discrete Gaussian from the OS's CSPRNG on a grid (privacy.secure_noise).
            flat = [add_gaussian_noise(v, self.params.noise_stddev) for v in flat]
        return [v.reshape(np.shape(a)) for v, a in zip(flat, update, strict=True)]

    def masked_release(
        self, released: Sequence[np.ndarray], counts: Sequence[np.ndarray] = ()
    ) -> list[np.ndarray]:
        """Values ``protect`` made, weighted by this round's roster, encoded and masked; then
        any ``counts`` (uint32 values that must add up exactly: round 0's counts and sums,
        an evaluation's counts) masked as they are, with no weight, clip or noise here."""
        self._expect("received", "masked")
        flat = [np.asarray(a).reshape(-1) for a in released]
        weight = site_weights(list(self._roster.values()), self.params)[self.site]
        fixed = FixedPoint(self.params.clip_range)
        exact = [np.asarray(a, dtype=np.uint32).reshape(-1) for a in counts]
        sizes = [v.size for v in [*flat, *exact]]
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[:2] == (self._participants, sizes):
            masks = prepared[2]
        else:
            masks = self._mask(self._participants, sizes)
        out = []
        for values, mask, original in zip(flat, masks, released, strict=False):
            encoded, outside = fixed.encode(values, weight)
            self.clipped_values += outside
            encoded += mask  # mod 2^32
            out.append(encoded.reshape(np.shape(original)))
        for values, mask, original in zip(exact, masks[len(flat) :], counts, strict=True):
            out.append((values + mask).reshape(np.shape(original)))
        return out

    def _mask(self, participants: Sequence[str], sizes: Sequence[int]) -> list[np.ndarray]:
        """This site's self mask plus one pairwise mask per other participant: added when this
        site comes first in the roster, subtracted when the peer does, so pairs cancel."""
        me = self._roster[self.site]
        pairs = []
        for peer in participants:
            if peer != self.site:
                pairs.append((self._pair_seed(peer), me.index < self._roster[peer].index))
        masks = []
        for start, size in zip(offsets(sizes), sizes, strict=True):
            mask = np.zeros(size, dtype=np.uint32)
            keys.apply_masks(mask, start, [(self._self_seed, True), *pairs])
            masks.append(mask)
        return masks

    def sign_survivors(self, survivors: Sequence[str], model: bytes = b"") -> pb.Consistency:
        """The consistency stage (with signed keys): this site signs the survivors' list it is
        shown and the digest of the model it was served, and will reveal only for that list,
        signed by a threshold of sites over the same model."""
        self._expect("masked", "signed")
        if self.identity is None:
            raise SecureAggregationError("this site has no certificate to sign survivors with")
        self._check_survivors(set(survivors))
        self._signed_survivors = sorted(survivors)
        self._signed_model = model
        data = survivors_bytes(self.context, list(survivors), model)
        return pb.Consistency(
            ref=self.context.ref(self.site), signature=self.identity.sign_bytes(data)
        )

    def _check_survivors(self, alive: set[str]) -> None:
        if not alive <= set(self._participants):
            raise SecureAggregationError("the survivors include sites that shared no keys")
        if self.site not in alive:
            raise SecureAggregationError(
                f"the survivors leave out site {self.site!r}, which sent its masked update"
            )
        if len(alive) < self.params.threshold:
            raise SecureAggregationError(
                f"{len(alive)} survivors are fewer than the threshold {self.params.threshold}"
            )

    def _check_consistency(
        self, survivors: Sequence[str], signatures: Sequence[pb.SurvivorSignature]
    ) -> None:
        """A threshold of roster sites signed exactly the list this site signed: no other
        site can have been shown a different one (and so asked for other shares)."""
        if sorted(survivors) != self._signed_survivors:
            raise SecureAggregationError(
                "the aggregator asks to reveal for other survivors than the list this site "
                "signed: split survivor lists, not answered"
            )
        data = survivors_bytes(self.context, list(survivors), self._signed_model)
        signers = {
            s.site
            for s in signatures
            if s.site in self._roster and signed_by(self._roster[s.site], data, s.signature)
        }
        others = sorted({s.site for s in signatures} - signers)
        if len(signers) < self.params.threshold or others:
            digest = self._signed_model.hex()[:12] or "none"
            raise SecureAggregationError(
                f"{len(signers)} valid signatures over the survivors' list and this site's "
                f"model (sha256 {digest}...) of {len(signatures)} relayed, the threshold is "
                f"{self.params.threshold}; {', '.join(others) or 'no site'} signed something "
                "else: split survivor lists, another model served to some sites, or forged "
                "signatures; not answered"
            )

    def reveal(
        self,
        survivors: Sequence[str],
        dropped: Sequence[str],
        signatures: Sequence[pb.SurvivorSignature] = (),
    ) -> pb.Reveal:
        """Shares of the survivors' self-mask seeds and of the dropped sites' mask keys: never
        both for one site, which would unmask that site's update. With signed keys, only
        after the consistency stage, for the list a threshold of sites signed."""
        if self.identity is not None:
            self._expect("signed", "revealed")
            self._check_consistency(survivors, signatures)
        else:
            self._expect("masked", "revealed")
        alive, gone = set(survivors), set(dropped)
        unopened = set(self._unopened)
        if alive & gone or alive | gone != set(self._participants) | unopened:
            raise SecureAggregationError(
                "the aggregator asked to reveal shares for sites that are not exactly this "
                "round's participants, or for a site both as survivor and as dropped"
            )
        if alive & unopened:
            raise SecureAggregationError(
                f"the survivors include {', '.join(sorted(alive & unopened))}, whose share did "
                "not open here: this site's update does not carry that pair's mask"
            )
        if self.site not in alive or len(alive) < self.params.threshold:
            raise SecureAggregationError(
                f"{len(alive)} survivors are fewer than the threshold {self.params.threshold}"
            )
        x = self._roster[self.site].index
        paired = sorted(gone - unopened)  # the dropped sites whose masks this update carries
        return pb.Reveal(
            ref=self.context.ref(self.site),
            self_seed_shares=[
                pb.SecretShare(owner=o, x=x, y=self._held[o].self_seed_share) for o in sorted(alive)
            ],
            mask_key_shares=[
                pb.SecretShare(owner=o, x=x, y=self._held[o].mask_key_share) for o in paired
            ],
            # A dropped site's update is not in the sum: the seed of one pair with it gives
            # nothing of any survivor's update.
            pair_seeds=[pb.PairSeed(peer=o, seed=self._pair_seed(o)) for o in paired],
        )

    def _pair_seed(self, peer: str) -> bytes:
        return keys.agree(self._mask_key, self._roster[peer].mask_public_key, self.context, "mask")

    def _expect(self, now: str, then: str) -> None:
        if self.stage != now:
            raise SecureAggregationError(
                f"site {self.site!r}: asked for step {then!r} of round {self.context.round} "
                f"while at step {self.stage!r}; steps cannot be repeated or skipped"
            )
        self.stage = then
