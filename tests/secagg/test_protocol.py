"""Secure aggregation's protocol, site sessions against the aggregator's SecureSum.

Every message crosses as serialised protobuf bytes, as it does over gRPC, so what is tested is
what travels. The sites' updates are real-valued arrays of an awkward size (chunk boundaries
fall mid-tensor)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from fedkube.errors import SecureAggregationError
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg import keys, shamir
from fedkube.secagg.disputes import disputes_among, sites_to_leave
from fedkube.secagg.encoding import CHUNK_VALUES, FixedPoint
from fedkube.secagg.roster import site_weights
from fedkube.secagg.server import SecureSum
from fedkube.secagg.site import SiteSession
from scipy import stats

SIZES = [CHUNK_VALUES + 1001, 37, 5000]
CONTEXT = keys.Context("hospitals", 3, 1)


def relay(msg):  # what crosses the wire: bytes, parsed back by the receiver's type
    return type(msg).FromString(msg.SerializeToString())


@dataclass
class Round:
    params: pb.SecAggParams
    server: SecureSum
    sessions: dict[str, SiteSession]
    updates: dict[str, list[np.ndarray]]
    masked: dict[str, list[np.ndarray]] = field(default_factory=dict)


def start_round(n: int, threshold: int, seed: int = 0, **params: float) -> Round:
    p = pb.SecAggParams(threshold=threshold, clip_range=4.0, **params)
    rng = np.random.default_rng(seed)
    names = [f"site-{i:02d}" for i in range(n)]
    sessions = {s: SiteSession(CONTEXT.job, s, CONTEXT.round, CONTEXT.attempt, p) for s in names}
    updates = {s: [rng.normal(0, 0.3, size).astype(np.float32) for size in SIZES] for s in names}
    server = SecureSum(CONTEXT, p, SIZES)
    for i, session in enumerate(sessions.values()):
        server.advertise(relay(session.advertisement(model_version=2, num_samples=50 + 7 * i)))
    return Round(p, server, sessions, updates)


def run(
    r: Round,
    *,
    silent_after_keys: set[str] = frozenset(),
    silent_after_masked: set[str] = frozenset(),
    tamper: Callable[[str, pb.Reveal], None] | None = None,
    bad_shares: dict[str, set[str]] | None = None,
) -> None:
    """One round through the aggregator's SecureSum. ``bad_shares``: sender -> the sites
    whose shares from it are sealed wrong."""
    roster = [relay(s) for s in r.server.close_roster(sorted(r.sessions))]
    for i, session in enumerate(r.sessions.values()):
        shares = session.share_keys(roster)
        for share in shares.shares:
            if share.recipient in (bad_shares or {}).get(session.site, ()):
                share.ciphertext = bytes([share.ciphertext[0] ^ 1]) + share.ciphertext[1:]
        r.server.add_shares(relay(shares))
        if i % 2 == 0:  # half the sites make their mask ahead, as trainers do
            session.prepare_mask(SIZES)
    for name, session in r.sessions.items():
        session.receive_shares([relay(m) for m in r.server.inbox(name)])
        if name in silent_after_keys:
            continue  # dropped before sending its masked update
        r.server.may_submit(name)
        r.server.note_unopened(name, session.unopened)
        masked = session.masked_update(r.updates[name])
        r.masked[name] = masked
        for t, values in enumerate(masked):
            wire = np.frombuffer(values.tobytes(), dtype="<u4")
            for at in range(0, wire.size, 100_000):  # arrives in chunks
                r.server.fold(t, at, wire[at : at + 100_000])
        r.server.commit(name)
    # As the aggregator's stage driver does when the masked updates are in.
    for name in sites_to_leave(disputes_among(r.server.survivors, r.server.unopened)):
        for t, values in enumerate(r.masked[name]):
            r.server.unfold(t, 0, np.frombuffer(values.tobytes(), dtype="<u4"))
        r.server.exclude(name)
    survivors, dropped = r.server.unmask_request()
    for name in survivors:
        if name not in silent_after_masked:
            reveal = relay(r.sessions[name].reveal(survivors, dropped))
            if tamper is not None:
                tamper(name, reveal)
            r.server.add_reveal(reveal)


def plain_fixed_point_sum(r: Round, sites: list[str]) -> list[np.ndarray]:
    """What the sum must be: the survivors' encoded updates, added with no masks at all."""
    weights = site_weights(r.server.roster, r.params)
    fixed = FixedPoint(r.params.clip_range)
    total = [np.zeros(n, dtype=np.uint32) for n in SIZES]
    for s in sites:
        for t, values in enumerate(r.updates[s]):
            total[t] += fixed.encode(values, weights[s])[0]
    return total


def test_ten_sites_sum_is_bit_exact() -> None:
    r = start_round(10, threshold=6)
    run(r)
    got = r.server.unmasked_sum()
    want = plain_fixed_point_sum(r, sorted(r.sessions))
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_bit_exact_when_three_sites_drop_after_masking() -> None:
    r = start_round(10, threshold=6, seed=1)
    gone = {"site-02", "site-05", "site-09"}
    run(r, silent_after_masked=gone)
    assert len(r.server.revealed) == 7 and not gone & set(r.server.revealed)
    got = r.server.unmasked_sum()
    # Their masked updates arrived before they dropped, so they are in the sum.
    want = plain_fixed_point_sum(r, sorted(r.sessions))
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_bit_exact_when_sites_drop_before_and_after_masking() -> None:
    r = start_round(10, threshold=6, seed=2)
    before, after = {"site-00", "site-07"}, {"site-03", "site-04"}
    run(r, silent_after_keys=before, silent_after_masked=after)
    assert r.server.unmask_request()[1] == sorted(before)
    got = r.server.unmasked_sum()
    want = plain_fixed_point_sum(r, sorted(set(r.sessions) - before))
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_unmasked_mean_is_the_weighted_mean() -> None:
    r = start_round(5, threshold=3, seed=3)
    run(r, silent_after_keys={"site-01"})
    mean, weight = r.server.unmask()
    roster = {s.site: s.num_samples for s in r.server.roster}
    alive = [s for s in r.sessions if s != "site-01"]
    assert weight == pytest.approx(sum(roster[s] for s in alive) / sum(roster.values()))
    total = sum(roster[s] for s in alive)
    for t in range(len(SIZES)):
        want = sum(roster[s] * r.updates[s][t].astype(np.float64) for s in alive) / total
        # Rounding is half a unit of 4/2^30 per site and value.
        np.testing.assert_allclose(mean[t], want, rtol=0, atol=5 * 4.0 / 2**30)


def test_one_masked_update_is_indistinguishable_from_uniform() -> None:
    r = start_round(4, threshold=3, seed=4)
    run(r)
    masked = np.concatenate([m.reshape(-1) for m in r.masked["site-01"]])
    plain = np.concatenate(
        [FixedPoint(4.0).encode(u, 0.25)[0] for u in r.updates["site-01"]]
    )  # the same values unmasked, for contrast
    for values, uniform in ((masked, True), (plain, False)):
        # 256 bins of the top byte (chi-square) and the values as fractions of 2^32 (KS).
        counts = np.bincount(values >> 24, minlength=256)
        chi = stats.chisquare(counts).pvalue
        ks = stats.kstest(values / 2.0**32, "uniform").pvalue
        if uniform:
            assert chi > 1e-3 and ks > 1e-3, (chi, ks)
        else:
            assert chi < 1e-12 and ks < 1e-12  # the test can tell structure from noise


def test_distributed_noise_is_added_by_the_sites() -> None:
    r = start_round(4, threshold=3, seed=5, clip_norm=1.0, noise_stddev=0.05, equal_weights=True)
    run(r)
    mean, _ = r.server.unmask()
    clipped = []
    for s in r.sessions:
        flat = np.concatenate([u.astype(np.float64) for u in r.updates[s]])
        clipped.append(flat * min(1.0, 1.0 / np.linalg.norm(flat)))
    residual = np.concatenate(mean) - np.mean(clipped, axis=0)
    # Four sites' noise of sd 0.05, averaged: sd 0.025.
    assert np.std(residual) == pytest.approx(0.025, rel=0.02)
    assert abs(np.mean(residual)) < 1e-3


# -- what a site refuses ---------------------------------------------------------------------


def test_site_refuses_a_roster_without_its_own_keys() -> None:
    r = start_round(4, threshold=3)
    roster = r.server.close_roster(sorted(r.sessions))
    forged = [relay(s) for s in roster]
    forged[0].mask_public_key = keys.public_bytes(keys.new_private_key())
    with pytest.raises(SecureAggregationError, match="own keys"):
        r.sessions["site-00"].share_keys(forged)


def test_site_refuses_to_reveal_both_secrets_of_one_site() -> None:
    r = start_round(4, threshold=2)
    run(r, silent_after_masked=set(r.sessions))  # nobody has revealed yet
    names = sorted(r.sessions)
    with pytest.raises(SecureAggregationError, match="both as survivor and as dropped"):
        r.sessions["site-00"].reveal(names, ["site-01"])
    with pytest.raises(SecureAggregationError, match="cannot be repeated"):
        r.sessions["site-00"].reveal(names, [])  # the refused request used up the step


def test_a_share_that_does_not_open_costs_its_sender_the_round_not_the_receiver() -> None:
    """site-01 seals a wrong share for site-00 alone. site-00 leaves site-01 out of its mask
    and names it; site-01 (the side named) leaves the round, and the other sites' pairs with
    it come off through its mask key. The sum of the rest is bit-exact."""
    r = start_round(5, threshold=3, seed=7)
    run(r, bad_shares={"site-01": {"site-00"}})
    assert r.sessions["site-00"].unopened == ["site-01"]
    assert r.server.unopened == {"site-00": {"site-01"}}
    assert r.server.excluded == ["site-01"]
    assert r.server.unmask_request() == (["site-00", "site-02", "site-03", "site-04"], ["site-01"])
    got = r.server.unmasked_sum()
    want = plain_fixed_point_sum(r, ["site-00", "site-02", "site-03", "site-04"])
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_a_sender_whose_shares_open_nowhere_leaves_without_a_trace_in_any_mask() -> None:
    r = start_round(5, threshold=3, seed=8)
    run(r, bad_shares={"site-03": {"site-00", "site-01", "site-02", "site-04"}})
    assert r.server.excluded == ["site-03"]
    got = r.server.unmasked_sum()
    want = plain_fixed_point_sum(r, ["site-00", "site-01", "site-02", "site-04"])
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_a_sender_whose_key_cannot_be_rebuilt_is_removed_with_the_pair_seeds() -> None:
    """site-02's shares open only at site-04: one share of its mask key, for a threshold of
    three, cannot rebuild it. site-04 reveals the seed of its pair with site-02 instead (site-02
    is out of the sum, so that seed gives away no update), and the sum is still bit-exact."""
    r = start_round(5, threshold=3, seed=9)
    run(r, bad_shares={"site-02": {"site-00", "site-01", "site-03"}})
    assert r.server.excluded == ["site-02"]
    assert [p.peer for p in r.server.revealed["site-04"].pair_seeds] == ["site-02"]
    assert not r.server.revealed["site-00"].pair_seeds
    got = r.server.unmasked_sum()
    want = plain_fixed_point_sum(r, ["site-00", "site-01", "site-03", "site-04"])
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_a_wrong_pair_seed_is_named_when_the_key_rebuilds() -> None:
    r = start_round(5, threshold=3, seed=11)

    def liar(name: str, reveal: pb.Reveal) -> None:
        if name == "site-01":
            reveal.pair_seeds[0].seed = bytes(32)

    run(r, silent_after_keys={"site-04"}, tamper=liar)
    got = r.server.unmasked_sum()
    want = plain_fixed_point_sum(r, ["site-00", "site-01", "site-02", "site-03"])
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    assert r.server.faulty == {"site-01"}


def test_a_site_that_names_every_other_site_leaves_alone() -> None:
    """A lying site cannot take honest sites out: it names them all, and the fewest sites
    that settle every dispute is the liar."""
    r = start_round(5, threshold=3, seed=10)
    liar = r.sessions["site-02"]
    original = liar.receive_shares

    def receive_and_lie(inbox):
        opened = original(inbox)
        liar._unopened = [s for s in r.sessions if s != "site-02"]
        return opened

    liar.receive_shares = receive_and_lie
    r.sessions["site-02"].reveal = lambda *a, **k: pytest.fail("the liar is asked to reveal")
    run(r)
    assert r.server.excluded == ["site-02"]
    got = r.server.unmasked_sum()
    want = plain_fixed_point_sum(r, ["site-00", "site-01", "site-03", "site-04"])
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_the_fewest_sites_settle_every_dispute() -> None:
    # One dispute: the site named leaves (it sent the share that did not open).
    assert sites_to_leave({("a", "b")}) == ["b"]
    # A site named by three others leaves alone; so does one that names three.
    assert sites_to_leave({("a", "d"), ("b", "d"), ("c", "d")}) == ["d"]
    assert sites_to_leave({("a", "b"), ("a", "c"), ("a", "d")}) == ["a"]
    # Two dishonest sites, each in its own disputes: both leave, no honest one.
    assert sites_to_leave({("a", "x"), ("b", "x"), ("y", "a"), ("y", "c")}) == ["x", "y"]
    assert disputes_among(["a", "b"], {"a": ["b", "gone"], "gone": ["a"]}) == {("a", "b")}


def test_a_site_refuses_to_reveal_a_self_mask_share_it_never_received() -> None:
    """Asked to treat a sender whose share did not open as a survivor, the site refuses: its
    own mask lacks that pair, and it holds no share of that site's self-mask seed."""
    r = start_round(3, threshold=2)
    roster = r.server.close_roster(sorted(r.sessions))
    for session in r.sessions.values():
        r.server.add_shares(session.share_keys(roster))
    inbox = [relay(m) for m in r.server.inbox("site-00")]
    inbox[0].ciphertext = bytes([inbox[0].ciphertext[0] ^ 1]) + inbox[0].ciphertext[1:]
    r.sessions["site-00"].receive_shares(inbox)
    assert r.sessions["site-00"].unopened == [inbox[0].sender]
    r.sessions["site-00"].masked_update(r.updates["site-00"])
    with pytest.raises(SecureAggregationError, match="whose share did not open here"):
        r.sessions["site-00"].reveal(sorted(r.sessions), [])


def test_the_aggregator_refuses_a_complaint_about_a_site_that_sent_no_share() -> None:
    r = start_round(3, threshold=2)
    with pytest.raises(SecureAggregationError, match="from sites that sent it none: site-02"):
        r.server.note_unopened("site-00", ["site-02"])


def test_site_refuses_too_few_survivors() -> None:
    r = start_round(4, threshold=3)
    run(r, silent_after_masked=set(r.sessions))
    with pytest.raises(SecureAggregationError, match="fewer than the threshold"):
        r.sessions["site-00"].reveal(["site-00", "site-01"], ["site-02", "site-03"])


# -- what the aggregator refuses -------------------------------------------------------------


def test_aggregator_needs_threshold_reveals() -> None:
    r = start_round(5, threshold=4)
    run(r, silent_after_masked={"site-00", "site-01"})
    with pytest.raises(SecureAggregationError, match="3 sites revealed shares; 4 are needed"):
        r.server.unmasked_sum()


def test_aggregator_refuses_a_masked_update_from_a_site_without_shares() -> None:
    r = start_round(3, threshold=2)
    r.server.close_roster(["site-00", "site-01"])
    with pytest.raises(SecureAggregationError, match="did not share its keys"):
        r.server.may_submit("site-02")


def test_a_wrong_share_with_none_to_spare_fails_the_unmask_naming_whose_secret() -> None:
    """Four reveals for a threshold of three correct no wrong share ((4 - 3) // 2 = 0): the
    unmask is refused, naming the secret's owner, rather than rebuilt wrong."""
    r = start_round(5, threshold=3, seed=6)
    run(r, silent_after_keys={"site-04"})
    bad = r.server.revealed["site-02"]
    bad.mask_key_shares[0].y = (12345).to_bytes(shamir.SHARE_BYTES, "big")
    with pytest.raises(SecureAggregationError, match=r"site .site-04.*more than 0 of them"):
        r.server.unmasked_sum()


def test_aggregator_refuses_shares_not_addressed_to_every_other_site() -> None:
    r = start_round(3, threshold=2)
    roster = r.server.close_roster(sorted(r.sessions))
    msg = r.sessions["site-00"].share_keys(roster)
    del msg.shares[1]
    with pytest.raises(SecureAggregationError, match="one share to each other site"):
        r.server.add_shares(msg)


# -- Shamir ----------------------------------------------------------------------------------


def test_a_mask_made_in_pieces_at_any_offsets_equals_the_mask_made_whole() -> None:
    seed = bytes(range(32))
    n = 2 * CHUNK_VALUES + 7
    whole = np.zeros(n, np.uint32)
    keys.apply_masks(whole, 0, [(seed, True)])
    # It is AES-256-CTR's key stream from counter 0, read as little-endian uint32.
    reference = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(64))
    assert whole[:16].tobytes() == reference
    cuts = [0, 1, 6, 4099, CHUNK_VALUES + 3, n]  # mid-block starts and a chunk boundary
    pieces = []
    for start, end in itertools.pairwise(cuts):
        piece = np.zeros(end - start, np.uint32)
        keys.apply_masks(piece, start, [(seed, True)])
        pieces.append(piece)
    assert np.array_equal(np.concatenate(pieces), whole)
    keys.apply_masks(whole, 0, [(seed, False)])
    assert not whole.any()


def test_shamir_any_threshold_shares_rebuild_and_fewer_cannot() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, [1, 2, 3, 4, 5], threshold=3)
    for xs in ([1, 2, 3], [2, 4, 5], [1, 3, 5], [1, 2, 3, 4, 5]):
        assert shamir.combine({x: shares[x] for x in xs}, 3) == secret
    with pytest.raises(SecureAggregationError, match="2 shares cannot rebuild"):
        shamir.combine({x: shares[x] for x in (1, 2)}, 3)
    # Two shares of a threshold-3 sharing fit every secret equally: they rebuild garbage.
    assert shamir._interpolate(
        [(1, int.from_bytes(shares[1], "big")), (2, int.from_bytes(shares[2], "big"))], 0
    ) != int.from_bytes(secret, "big")


def test_a_low_order_key_is_refused_at_advertisement_and_costs_only_its_sender() -> None:
    """An all-zero X25519 key agrees an all-zero secret with anyone: in the roster it would
    break every other site's key exchange. It is refused when advertised; the round goes on
    with the others."""
    params = pb.SecAggParams(threshold=2, clip_range=4.0)
    server = SecureSum(CONTEXT, params, SIZES)
    honest = [SiteSession(CONTEXT.job, f"site-{i}", 3, 1, params) for i in range(3)]
    bad = relay(honest[2].advertisement(model_version=2, num_samples=10))
    bad.mask_public_key = bytes(32)
    with pytest.raises(SecureAggregationError, match="mask_public_key is not a usable X25519"):
        server.advertise(bad)
    for session in honest[:2]:
        server.advertise(relay(session.advertisement(model_version=2, num_samples=10)))
    roster = [relay(s) for s in server.close_roster(["site-0", "site-1"])]
    for session in honest[:2]:
        server.add_shares(relay(session.share_keys(roster)))  # their exchanges still work


def test_a_site_refuses_to_mask_non_finite_values() -> None:
    """Fixed-point encoding would turn NaN into an ordinary-looking number in the sum."""
    r = start_round(3, 2)
    roster = [relay(s) for s in r.server.close_roster(sorted(r.sessions))]
    for session in r.sessions.values():
        r.server.add_shares(relay(session.share_keys(roster)))
    name, session = next(iter(r.sessions.items()))
    session.receive_shares([relay(m) for m in r.server.inbox(name)])
    update = [u.copy() for u in r.updates[name]]
    update[0][3] = np.nan
    with pytest.raises(SecureAggregationError, match="NaN or Inf"):
        session.masked_update(update)


def test_a_roster_naming_a_site_the_manifest_does_not_list_is_refused() -> None:
    params = pb.SecAggParams(threshold=2, clip_range=8.0)
    sites = ["site-0", "site-1", "site-9"]
    sessions = {
        s: SiteSession("j", s, 1, 1, params, job_sites=frozenset({"site-0", "site-1", "site-2"}))
        for s in sites
    }
    total = SecureSum(keys.Context("j", 1, 1), params, [4])
    for session in sessions.values():
        total.advertise(session.advertisement(0, 10))
    roster = total.close_roster(sites)
    with pytest.raises(SecureAggregationError, match="the roster names site-9, which this site"):
        sessions["site-0"].share_keys(roster)


def _wrong(share: pb.SecretShare) -> None:
    share.y = (int.from_bytes(share.y, "big") ^ 1).to_bytes(len(share.y), "big")


def test_wrong_shares_from_a_revealer_are_named_and_the_sum_rebuilt_without_them() -> None:
    """Seven sites reveal for a threshold of three (an eighth dropped before masking): two of
    them send wrong shares of every secret. The sum is still bit-exact, and the round names
    the two (robust unmasking corrects up to (7 - 3) // 2 wrong shares)."""
    r = start_round(8, threshold=3, seed=5)

    def liar(name: str, reveal: pb.Reveal) -> None:
        if name in ("site-01", "site-04"):
            for share in [*reveal.self_seed_shares, *reveal.mask_key_shares]:
                _wrong(share)

    run(r, silent_after_keys={"site-07"}, tamper=liar)
    got = r.server.unmasked_sum()
    want = plain_fixed_point_sum(r, sorted(set(r.sessions) - {"site-07"}))
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    assert r.server.faulty == {"site-01", "site-04"}


def test_a_wrong_mask_key_share_among_exactly_threshold_reveals_is_caught() -> None:
    """Three reveals for a threshold of three: a wrong share cannot be outvoted, but the
    dropped site's mask key rebuilt from it is not the key it advertised."""
    r = start_round(4, threshold=3, seed=6)

    def liar(name: str, reveal: pb.Reveal) -> None:
        if name == "site-02":
            for share in reveal.mask_key_shares:
                _wrong(share)

    run(r, silent_after_keys={"site-03"}, tamper=liar)
    with pytest.raises(SecureAggregationError, match="rebuild a key it did not advertise"):
        r.server.unmasked_sum()


def test_too_many_wrong_shares_are_refused_not_guessed() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, [1, 2, 3, 4, 5, 6, 7], 3)
    assert shamir.robust_combine(shares, 3) == (secret, [])
    for x in (2, 5):
        shares[x] = (int.from_bytes(shares[x], "big") + 1).to_bytes(66, "big")
    assert shamir.robust_combine(shares, 3) == (secret, [2, 5])
    shares[7] = (int.from_bytes(shares[7], "big") + 1).to_bytes(66, "big")
    with pytest.raises(SecureAggregationError, match="more than 2 of them are wrong"):
        shamir.robust_combine(shares, 3)


def test_wrong_shares_among_the_first_are_found_in_a_large_roster_too() -> None:
    """Twenty shares, threshold eleven: C(20, 11) bases are too many to try in order, and a
    wrong share at x = 1 would be in every one tried first; random bases find the rest."""
    secret = bytes(range(32, 64))
    xs = list(range(1, 21))
    shares = shamir.split(secret, xs, 11)
    for x in (1, 2, 3):
        shares[x] = (int.from_bytes(shares[x], "big") ^ 7).to_bytes(66, "big")
    assert shamir.robust_combine(shares, 11) == (secret, [1, 2, 3])
