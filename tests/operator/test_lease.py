"""Who leads among the operator's replicas, decided from the Lease as data (client-go's rules):
a replica takes a lease nobody holds, its own, or one its holder stopped renewing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fedkube_operator.lease import LeaseRecord, may_take, taken

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)


def test_a_free_own_or_lapsed_lease_is_taken_and_a_live_one_is_not() -> None:
    assert may_take(LeaseRecord.from_spec(None), "b", NOW)
    live = LeaseRecord("a", NOW - timedelta(seconds=9), 10, 0)
    assert not may_take(live, "b", NOW)
    assert may_take(live, "a", NOW)  # renewing its own
    lapsed = LeaseRecord("a", NOW - timedelta(seconds=11), 10, 0)
    assert may_take(lapsed, "b", NOW)


def test_taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() -> None:
    lapsed = LeaseRecord.from_spec(
        {
            "holderIdentity": "a",
            "renewTime": "2026-12-06T11:59:00.000000Z",
            "acquireTime": "2026-12-06T11:00:00.000000Z",
            "leaseDurationSeconds": 10,
            "leaseTransitions": 4,
        }
    )
    spec = taken(lapsed, "b", NOW)
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 5
    assert spec["acquireTime"] == spec["renewTime"] == "2026-12-06T12:00:00.000000Z"
    renewed = taken(LeaseRecord.from_spec(spec), "b", NOW + timedelta(seconds=3))
    assert renewed["acquireTime"] == "2026-12-06T12:00:00.000000Z"
    assert renewed["renewTime"] == "2026-12-06T12:00:03.000000Z"
    assert renewed["leaseTransitions"] == 5
    # The first holder of a new lease is no transition.
    assert taken(LeaseRecord.from_spec(None), "a", NOW)["leaseTransitions"] == 0
