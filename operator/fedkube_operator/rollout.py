"""Rolling a job's edit out to its pods: each pod carries the digest of the spec it was made
from, the fields an edit must reach a running pod through (fedkube.spec.edits: every field but
the operational ones, which the operator applies itself). A running pod with another digest
is recreated; the aggregator resumes from its checkpoint.

A pod made by an operator that did not write the digest has none: it is left running, so an
upgrade of the operator restarts nothing (its next edit rolls it)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fedkube.spec.edits import EDITS

SPEC_DIGEST = "fedkube.io/spec-sha256"


def spec_digest(resource: dict[str, Any]) -> str:
    spec = {
        k: v
        for k, v in (resource.get("spec") or {}).items()
        if EDITS.get(k, ("",))[0] != "operational"
    }
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def stamp(pod: dict[str, Any], digest: str) -> dict[str, Any]:
    pod["metadata"].setdefault("annotations", {})[SPEC_DIGEST] = digest
    return pod


def stale(seen: dict[str, Any], want: dict[str, Any]) -> bool:
    """The pod runs an older spec than the job's (never a pod without a digest)."""
    has = ((seen.get("metadata") or {}).get("annotations") or {}).get(SPEC_DIGEST)
    return has is not None and has != want["metadata"]["annotations"][SPEC_DIGEST]
