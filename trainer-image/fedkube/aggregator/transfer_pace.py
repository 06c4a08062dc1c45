"""How fast a transfer may and must move. Its window: how far a site's upload may run ahead
of the aggregator's reads. Its pace: how long it may take over each of its parts. A peer
holding one of the few transfer slots must move data: never silent longer than the idle
limit, and, after a short grace, at least a minimum rate on average since it took the slot.
A peer that reads one part every 29 s (under the idle limit) no longer keeps the slot from
the others."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# A peer that moves nothing for this long mid-transfer is dropped.
TRANSFER_IDLE_SECONDS = 30.0
# The floor on a transfer's average rate (--min-transfer-rate), after the grace: 64 KiB/s is
# half a megabit, slower than any link a hospital would train over.
MIN_TRANSFER_KIB_PER_SECOND = 64.0
TRANSFER_GRACE_SECONDS = 10.0
# The flow-control window of each stream the aggregator reads (--upload-window): what a site
# may send ahead of the aggregator's reads, so an upload moves at most this much per round
# trip: 4 MiB at 100 ms is about 40 MiB/s, where gRPC's 64 KiB default held uploads to the one
# 1 MiB chunk being read, 8.7 MiB/s. Sites wait for the go-ahead before sending past their
# update's header, so only the uploads holding a slot fill it: slots x window (16 MiB) at most,
# taken where the link outruns the aggregator (on loopback, say).
UPLOAD_WINDOW_KIB = 4096
UPLOAD_WINDOW_RANGE_KIB = (64, 65536)


@dataclass
class TransferPace:
    min_rate: float  # bytes per second; 0 turns the floor off
    grace: float = TRANSFER_GRACE_SECONDS
    idle: float = TRANSFER_IDLE_SECONDS
    started: float = field(default_factory=time.monotonic)
    moved: int = 0

    def timeout(self, nbytes: int) -> float:
        """How long the next part (``nbytes``) may take; 0 or less: too slow already."""
        if self.min_rate <= 0:
            return self.idle
        due = self.started + self.grace + (self.moved + nbytes) / self.min_rate
        return min(self.idle, due - time.monotonic())

    def done(self, nbytes: int) -> None:
        self.moved += nbytes

    def why(self, verb: str) -> str:
        """Why a transfer that ran out of time is dropped, in the peer's terms."""
        elapsed = time.monotonic() - self.started
        if self.min_rate > 0 and elapsed < self.idle + self.grace:
            floor = self.min_rate / 1024
            return (
                f"the site {verb} {self.moved} bytes in {elapsed:.0f} s, below the aggregator's "
                f"floor of {floor:g} KiB/s (--min-transfer-rate) after a {self.grace:g} s grace"
            )
        return f"the site {verb} nothing for {self.idle:g} s"
