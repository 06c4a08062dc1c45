"""What an edit of a running job's spec does, field by field.

- **immutable**: part of what the job learns and what the sites admitted (and, where asked,
  approved); the aggregator's checkpoint and each site's privacy ledger are of it. The API
  server refuses the edit (a CEL transition rule in the CRD) with a message that says to
  create a new job instead.
- **rolled out**: the job's schedule and its pods. The operator rewrites the job's manifest,
  judges the new terms against each site's policy and consent again, and recreates the pods
  that read the old one; the aggregator resumes from its checkpoint. ``status.observedGeneration``
  reaches the edit's generation once every running pod has it.
- **operational**: read by the operator at each reconcile; applied at once.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["immutable", "rolled out", "operational"]

# field (the spec's camelCase name) -> (what an edit does, why)
EDITS: dict[str, tuple[Kind, str]] = {
    "task": ("immutable", "the model, its data handling and the checkpoint are of it"),
    "strategy": ("immutable", "the checkpoint holds this strategy's state"),
    "sites": ("immutable", "the sites admitted and approved the job as it lists them"),
    "evaluation": ("immutable", "the sites admitted how their held-out data are scored"),
    "checkpoint": ("immutable", "the job resumes from where it keeps its checkpoints"),
    "output": ("immutable", "the job's model and result are written there"),
    "aggregator": ("immutable", "the sites trust and dial this aggregator"),
    "personalization": ("immutable", "each site's own model is trained this way"),
    "security": ("immutable", "the sites admitted the job with these protections"),
    "privacy": ("immutable", "each site's privacy ledger accounts this job's settings"),
    "statistics": ("immutable", "the sites admitted what round 0 reveals"),
    "communication": ("immutable", "the sites admitted what their updates reveal"),
    "rounds": ("rolled out", "the aggregator resumes from its checkpoint with the new count"),
    "minSitesPerRound": ("rolled out", "the aggregator resumes with the new quorum"),
    "sitesPerRound": ("rolled out", "the aggregator resumes with the new sample"),
    "roundTimeoutSeconds": ("rolled out", "the aggregator resumes with the new timeout"),
    "joinGraceSeconds": ("rolled out", "the aggregator resumes with the new grace"),
    "pods": ("rolled out", "a pod's resources and placement are fixed once it runs"),
    "suspend": ("operational", "the operator removes or recreates the pods"),
    "backoffLimit": ("operational", "the operator counts failures against it"),
    "podCleanup": ("operational", "the operator removes finished pods by it"),
}


def immutable_fields() -> list[str]:
    return [f for f, (kind, _) in EDITS.items() if kind == "immutable"]


def transition_rules() -> list[dict[str, str]]:
    """CEL rules for the spec: each immutable field stays as it was, present or absent."""
    return [
        {
            "rule": f"has(self.{f}) == has(oldSelf.{f}) && (!has(self.{f}) || "
            f"self.{f} == oldSelf.{f})",
            "message": f"spec.{f} is immutable once the job exists ({why}); to change it, "
            "create a new job under another name",
            "fieldPath": f".{f}",
        }
        for f, (kind, why) in EDITS.items()
        if kind == "immutable"
    ]
