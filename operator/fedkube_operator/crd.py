"""The FederatedJob CRD, generated from the pydantic models (one source of truth).

    python -m fedkube_operator.crd            rewrite crds/, the Helm chart's copy of the
                                              spec (files/, which templates/crd.yaml wraps)
                                              and the chart's schema of site.policy
    python -m fedkube_operator.crd --check    exit 1 if either has drifted

pydantic writes JSON Schema; Kubernetes wants a structural OpenAPI v3 schema: no $ref, no
anyOf of types, nullable instead of null members, boolean exclusive bounds, no
additionalProperties beside properties. CEL rules come from the models (``cel`` in the spec).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from fedkube.spec.approval import APPROVAL_KIND, APPROVAL_PLURAL, SiteApprovalSpec
from fedkube.spec.base import API_GROUP, API_VERSION, KIND
from fedkube.spec.edits import transition_rules
from fedkube.spec.job import JobSpec

from fedkube_operator.chart_schema import VALUES_SCHEMA_FILE, values_schema_text
from fedkube_operator.site_report import SITE_KIND, SITE_PLURAL, FederatedSiteStatus
from fedkube_operator.status_model import JobStatus

PLURAL = "federatedjobs"
ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "federatedjobs.yaml"
# The chart's template (templates/crd.yaml) writes its own metadata and includes this text as
# it is: Helm's fromYaml/toYaml would turn 1e-05 into a string.
CHART_SPEC_FILE = ROOT / "helm" / "fedkube" / "files" / "federatedjobs-spec.yaml"
APPROVAL_CRD_FILE = ROOT / "crds" / "siteapprovals.yaml"
APPROVAL_CHART_SPEC_FILE = ROOT / "helm" / "fedkube" / "files" / "siteapprovals-spec.yaml"
SITE_CRD_FILE = ROOT / "crds" / "federatedsites.yaml"
SITE_CHART_SPEC_FILE = ROOT / "helm" / "fedkube" / "files" / "federatedsites-spec.yaml"
_DROP = {"title", "discriminator", "additionalProperties", "$defs"}


def structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return structural(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {k: structural(v, defs) for k, v in value.items()}
        elif key in ("items",):
            out[key] = structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key in ("anyOf", "oneOf"):
            out.update(_union(value, defs))
        else:
            out[key] = value
    if "properties" in node or (node.get("type") == "object" and "additionalProperties" in node):
        out.setdefault("type", "object")
    if node.get("type") == "object" and "properties" not in node:
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and ("anyOf" in extra or not extra):
            # A map of mixed scalars (model params): kept as given.
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif isinstance(extra, dict):
            out["additionalProperties"] = structural(extra, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _union(members: list[Any], defs: dict[str, Any]) -> dict[str, Any]:
    real = [structural(m, defs) for m in members if m.get("type") != "null"]
    nullable = len(real) < len(members)
    if len(real) == 1:
        merged = dict(real[0])
    elif all(m.get("type") == "object" for m in real):
        merged = _tagged_union(real)
    else:
        merged = {"x-kubernetes-preserve-unknown-fields": True}
    if nullable:
        merged["nullable"] = True
    return merged


def _tagged_union(members: list[dict[str, Any]], tag: str = "name") -> dict[str, Any]:
    """One object with every member's fields (strategies). Defaults stay with pydantic, since
    members disagree on them; a field is accepted only with the tags whose member has it."""
    props: dict[str, Any] = {}
    owners: dict[str, set[str]] = {}
    tags: set[str] = set()
    for m in members:
        member_tags = set(m["properties"][tag]["enum"])
        tags |= member_tags
        for k, v in m["properties"].items():
            props[k] = {key: val for key, val in v.items() if key != "default"}
            owners.setdefault(k, set()).update(member_tags)
    props[tag] = {
        "type": "string",
        "enum": sorted(tags),
        "description": f"One of {', '.join(sorted(tags))}; each field below names the ones "
        "it applies to.",
    }
    rules = [
        {
            "rule": f"!has(self.{k}) || self.{tag} in {sorted(who)}".replace("'", '"'),
            "message": f"{k} applies only to {', '.join(sorted(who))}",
            "fieldPath": f".{k}",
        }
        for k, who in sorted(owners.items())
        if who != tags
    ]
    return {
        "type": "object",
        "required": [tag],
        "properties": props,
        "x-kubernetes-validations": rules,
    }


def schema_of(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    result: dict[str, Any] = structural(raw, raw.get("$defs", {}))
    return result


def spec_schema() -> dict[str, Any]:
    schema = schema_of(JobSpec)
    props = schema["properties"]
    # Site names are keys: the API server itself refuses a repeated name.
    props["sites"]["x-kubernetes-list-type"] = "map"
    props["sites"]["x-kubernetes-list-map-keys"] = ["name"]
    # What a running job learns cannot change under it (fedkube.spec.edits says field by
    # field); its schedule, pods and operational fields can.
    schema.setdefault("x-kubernetes-validations", []).extend(transition_rules())
    return schema


def column(
    name: str, path: str, kind: str = "string", priority: int = 0, desc: str = ""
) -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path, "priority": priority, "description": desc}


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "plural": PLURAL,
                "singular": "federatedjob",
                "shortNames": ["fj"],
                "categories": ["fedkube"],
            },
            "versions": [
                {
                    **_version(
                        [
                            column("Phase", ".status.phase"),
                            column("Round", ".status.round", "integer"),
                            column(
                                "Accuracy",
                                ".status.accuracy",
                                "number",
                                desc="global held-out accuracy",
                            ),
                            column("Age", ".metadata.creationTimestamp", "date"),
                            column(
                                "Model",
                                ".status.modelVolume",
                                "string",
                                1,
                                "the claim holding the model, result and checkpoints",
                            ),
                            column("Rounds", ".spec.rounds", "integer", 1),
                            column("Loss", ".status.loss", "number", 1),
                            column(
                                "Sites",
                                ".status.sitesInLastRound",
                                "integer",
                                1,
                                "sites in the last round",
                            ),
                            column("Strategy", ".spec.strategy.name", "string", 1),
                        ],
                        {"spec": spec_schema(), "status": schema_of(JobStatus)},
                    ),
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def _version(columns: list[dict[str, Any]], properties: dict[str, Any]) -> dict[str, Any]:
    """One served and stored version of a fedkube CRD: its printer columns and its schema
    (apiVersion, kind, metadata and ``properties``)."""
    return {
        "name": API_VERSION,
        "served": True,
        "storage": True,
        "additionalPrinterColumns": columns,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "apiVersion": {
                        "type": "string",
                        "description": "The versioned schema of this object (fedkube.io/"
                        f"{API_VERSION}).",
                    },
                    "kind": {"type": "string", "description": "The kind of this object."},
                    # Only {type: object}: the API server refuses anything more here, and
                    # kubectl explain shows ObjectMeta's own words for it.
                    "metadata": {"type": "object"},
                    **properties,
                },
            }
        },
    }


def approval_crd() -> dict[str, Any]:
    """SiteApproval: cluster-scoped, so that only who may write cluster-scoped resources
    (the site admin, through the chart's site-admin ClusterRole) can consent for the site."""
    spec = schema_of(SiteApprovalSpec)
    # An approval is of one job's terms: to approve other terms, make another.
    for field in ("job", "termsSha256"):
        spec["properties"][field].setdefault("x-kubernetes-validations", []).append(
            {"rule": "self == oldSelf", "message": f"{field} is immutable; approve anew"}
        )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{APPROVAL_PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Cluster",
            "names": {
                "kind": APPROVAL_KIND,
                "plural": APPROVAL_PLURAL,
                "singular": "siteapproval",
                "shortNames": ["fja"],
                "categories": ["fedkube"],
            },
            "versions": [
                _version(
                    [
                        column("Namespace", ".spec.job.namespace"),
                        column("Job", ".spec.job.name"),
                        column("Site", ".spec.site"),
                        column("Expires", ".spec.expiresAt", "date"),
                        column("Age", ".metadata.creationTimestamp", "date"),
                        column("Terms", ".spec.termsSha256", "string", 1, "approved digest"),
                    ],
                    {"spec": spec},
                )
            ],
        },
    }


def site_crd() -> dict[str, Any]:
    """FederatedSite: cluster-scoped, one per site's operator, whose status anyone at the
    site may read (the chart's site-reader role): its policy, datasets and budgets, jobs."""
    spec = {
        "type": "object",
        "description": "Which site this is (its operator writes it); the status is the rest.",
        "properties": {"site": {"type": "string", "maxLength": 253, "description": "The site."}},
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{SITE_PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Cluster",
            "names": {
                "kind": SITE_KIND,
                "plural": SITE_PLURAL,
                "singular": "federatedsite",
                "shortNames": ["fsite"],
                "categories": ["fedkube"],
            },
            "versions": [
                {
                    **_version(
                        [
                            column("Cap", ".status.epsilonCap", "number", 0, "site.epsilonCap"),
                            column("Summary", ".status.summary"),
                            column("Updated", ".status.updatedAt", "date"),
                        ],
                        {"spec": spec, "status": schema_of(FederatedSiteStatus)},
                    ),
                    "subresources": {"status": {}},
                }
            ],
        },
    }


_HEADER = "# Generated by `python -m fedkube_operator.crd` from the pydantic models; do not edit.\n"


def render() -> dict[Path, str]:
    """Each generated file and its text."""
    document = crd()
    approvals = approval_crd()
    sites = site_crd()
    return {
        SITE_CRD_FILE: _HEADER + yaml.safe_dump(sites, sort_keys=False, width=100),
        SITE_CHART_SPEC_FILE: _HEADER
        + yaml.safe_dump({"spec": sites["spec"]}, sort_keys=False, width=100),
        VALUES_SCHEMA_FILE: values_schema_text(),
        APPROVAL_CRD_FILE: _HEADER + yaml.safe_dump(approvals, sort_keys=False, width=100),
        APPROVAL_CHART_SPEC_FILE: _HEADER
        + yaml.safe_dump({"spec": approvals["spec"]}, sort_keys=False, width=100),
        CRD_FILE: _HEADER + yaml.safe_dump(document, sort_keys=False, width=100),
        CHART_SPEC_FILE: _HEADER
        + yaml.safe_dump({"spec": document["spec"]}, sort_keys=False, width=100),
    }


def main(argv: list[str]) -> int:
    texts = render()
    if "--check" in argv:
        stale = [p for p, text in texts.items() if not p.exists() or p.read_text() != text]
        for p in stale:
            print(f"{p} is out of date: run `python -m fedkube_operator.crd`", file=sys.stderr)
        return 1 if stale else 0
    for p, text in texts.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
