"""The chart's values schema for ``site.policy``, generated from the engine's ``SitePolicy``
model, so `helm install` refuses the settings the operator and `fedkube run --site-policy`
would refuse (one source of truth, like the CRD's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedkube.spec.site_policy import SitePolicy

ROOT = Path(__file__).resolve().parents[2]
VALUES_SCHEMA_FILE = ROOT / "helm" / "fedkube" / "values.schema.json"


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """JSON Schema without $ref or titles (Helm validates values against draft-07)."""
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs)
    return {k: _inline(v, defs) for k, v in node.items() if k not in ("title", "$defs")}


def policy_schema() -> dict[str, Any]:
    raw = SitePolicy.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _inline(raw, raw.get("$defs", {}))
    schema["description"] = (
        "What a job must promise before it reads this site's data; the operator refuses a "
        "job that asks less (SpecValid=False, reason RefusedBySite)."
    )
    return schema


def values_schema_text() -> str:
    """values.schema.json with site.policy as the model says."""
    schema = json.loads(VALUES_SCHEMA_FILE.read_text())
    schema["properties"]["site"]["properties"]["policy"] = policy_schema()
    return json.dumps(schema, indent=2) + "\n"
