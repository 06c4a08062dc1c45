"""Which trainers an aggregator of this release takes: the compatibility table, as code.

Consortium members upgrade one at a time, so an aggregator takes trainers of its own protocol
version and of the one before, for the jobs the change between them does not touch; it says
so to the site at Subscribe. Any other pair is refused there, naming both versions and what to
upgrade. ``docs/compatibility.md`` is the same table for people; a test keeps them agreeing.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedkube import __version__
from fedkube.errors import ProtocolMismatch
from fedkube.proto import PROTOCOL_VERSION

# gRPC metadata at Subscribe that carries the notice to a site that is one behind.
NOTICE_METADATA = "fedkube-notice"
# gRPC metadata of the upload go-ahead. At Subscribe, an aggregator that gives it says so; at
# SubmitUpdate it sends it once the upload holds a transfer slot. A site that heard it sends
# its update's header, then waits for the go-ahead: an upload waiting for a slot holds no
# bytes in the aggregator's buffers, whatever its window. A site that did not hear it (an
# older aggregator) sends at once, as before; an older site, likewise, to this aggregator.
GO_AHEAD_METADATA = "fedkube-upload-go-ahead"


@dataclass(frozen=True)
class PreviousProtocol:
    """The protocol version before this one, as this release still takes it."""

    version: int
    # What changed since: jobs that use it refuse a trainer of ``version``.
    changed: str
    refused_with_secure_aggregation: bool


PREVIOUS = PreviousProtocol(
    version=PROTOCOL_VERSION - 1,
    changed=(
        "secure aggregation's messages (shares that do not open are named with the masked "
        "update; reveals carry the pair seeds of dropped sites; the consistency signature "
        "covers the model's digest)"
    ),
    refused_with_secure_aggregation=True,
)


def admit(site: str, version: int, secure_aggregation: bool) -> str | None:
    """Take a trainer of protocol ``version`` into a job; a notice for it when it is one
    behind. Raises ProtocolMismatch, naming both versions and what to upgrade, otherwise."""
    if version == PROTOCOL_VERSION:
        return None
    upgrade = (
        f"upgrade site {site!r} to fedkube {__version__} (protocol {PROTOCOL_VERSION}), the "
        "aggregator's release; see docs/compatibility.md"
    )
    if version > PROTOCOL_VERSION:
        raise ProtocolMismatch(
            f"site {site!r} speaks fedkube protocol {version}, newer than this aggregator's "
            f"{PROTOCOL_VERSION} (fedkube {__version__}): upgrade the aggregator first, or run "
            "the site's previous release",
            site=site,
        )
    if version != PREVIOUS.version:
        raise ProtocolMismatch(
            f"site {site!r} speaks fedkube protocol {version}, this aggregator speaks "
            f"{PROTOCOL_VERSION} and takes {PREVIOUS.version} too, no older: {upgrade}",
            site=site,
        )
    if secure_aggregation and PREVIOUS.refused_with_secure_aggregation:
        raise ProtocolMismatch(
            f"site {site!r} speaks fedkube protocol {version}, this aggregator speaks "
            f"{PROTOCOL_VERSION}: protocol {PROTOCOL_VERSION} changed {PREVIOUS.changed}, and "
            f"this job uses secure aggregation: {upgrade}",
            site=site,
        )
    return (
        f"site {site!r} speaks fedkube protocol {version}, one behind this aggregator's "
        f"{PROTOCOL_VERSION} (fedkube {__version__}): taken for this job, which does not use "
        f"what changed; {upgrade} before the aggregator moves on"
    )
