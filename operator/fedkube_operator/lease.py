"""Who leads, decided from a coordination.k8s.io Lease as plain data: one operator replica
reconciles, the others stand by and take over once the leader stops renewing.

The same rules as client-go's leader election: a replica takes the lease when nobody holds
it, when it holds it already, or when its holder has not renewed it within its duration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

LEASE_SECONDS = 10  # a standby takes over this long after the leader's last renewal
RENEW_SECONDS = 3  # the leader renews this often
RETRY_SECONDS = 2  # a standby tries this often


@dataclass(frozen=True)
class LeaseRecord:
    holder: str | None
    renewed: datetime | None
    duration: int
    transitions: int
    acquired: datetime | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> LeaseRecord:
        spec = spec or {}
        return cls(
            holder=spec.get("holderIdentity"),
            renewed=_time(spec.get("renewTime")),
            duration=int(spec.get("leaseDurationSeconds") or LEASE_SECONDS),
            transitions=int(spec.get("leaseTransitions") or 0),
            acquired=_time(spec.get("acquireTime")),
        )


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def may_take(lease: LeaseRecord, me: str, now: datetime) -> bool:
    if lease.holder in (None, "", me) or lease.renewed is None:
        return True
    return now > lease.renewed + timedelta(seconds=lease.duration)


def taken(
    lease: LeaseRecord, me: str, now: datetime, duration: int = LEASE_SECONDS
) -> dict[str, Any]:
    """The Lease's spec once ``me`` holds it (renewed now)."""
    moved = lease.holder != me
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    acquired = (
        stamp
        if moved or lease.acquired is None
        else lease.acquired.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    )
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": duration,
        "acquireTime": acquired,
        "renewTime": stamp,
        "leaseTransitions": lease.transitions + (1 if moved and lease.holder else 0),
    }
