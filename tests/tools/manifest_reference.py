"""docs/reference/manifest.md: every field of a FederatedJob's spec, written from the CRD's
schema (whose descriptions are the pydantic models'), so the reference cannot drift from what
the API server and `fedkube validate` accept.

    python3 tests/tools/manifest_reference.py          # rewrite the page
    python3 tests/tools/manifest_reference.py --check  # exit 1 when it drifted
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedkube.spec.edits import EDITS
from fedkube_operator.crd import spec_schema

OUT = Path(__file__).resolve().parents[2] / "docs" / "reference" / "manifest.md"

HEAD = """# Manifest reference

Every field of a `FederatedJob`'s `spec`, as the API server and `fedkube validate` check it.
Written from the CRD's schema by `tests/tools/manifest_reference.py` (do not edit here); the
same descriptions answer `kubectl explain federatedjob.spec.<field>`. How the fields work
together, with examples: [the manifest](../manifest.md).

| field | type | default | what it is |
|---|---|---|---|
"""


def _type(node: dict[str, Any]) -> str:
    if "anyOf" in node or "oneOf" in node:
        return " or ".join(_type(n) for n in node.get("anyOf") or node["oneOf"])
    kind = node.get("type", "object" if "properties" in node else "any")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    limits = []
    if "minimum" in node:
        limits.append(f"≥ {node['minimum']}")
    if "maximum" in node:
        limits.append(f"≤ {node['maximum']}")
    return f"{kind} ({', '.join(limits)})" if limits else str(kind)


def rows(node: dict[str, Any], path: str) -> list[str]:
    out = []
    for name, child in (node.get("properties") or {}).items():
        here = f"{path}.{name}"
        default = f"`{json.dumps(child['default'])}`" if "default" in child else ""
        description = (child.get("description") or "").replace("|", "\\|").replace("\n", " ")
        out.append(f"| `{here}` | {_type(child)} | {default} | {description} |")
        if child.get("type") == "array" and "properties" in child.get("items", {}):
            out += rows(child["items"], f"{here}[]")
        elif "properties" in child:
            out += rows(child, here)
    return out


EDITS_HEAD = """
## Editing a running job

What `kubectl edit` or `kubectl apply` of a changed spec does to a job that exists. An
immutable field is refused by the API server, with the reason and what to do instead; a
rolled-out one recreates the pods that read the old spec (the aggregator resumes from its
checkpoint) after the site's policy and consent judge the new terms, and
`status.observedGeneration` reaches the edit's `metadata.generation` once no pod reads the old
one; an operational one applies at the operator's next reconcile.

| field | on a running job | why |
|---|---|---|
"""


def render() -> str:
    edits = [f"| `spec.{f}` | {kind} | {why} |" for f, (kind, why) in EDITS.items()]
    return (
        HEAD + "\n".join(rows(spec_schema(), "spec")) + "\n" + EDITS_HEAD + "\n".join(edits) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 on drift")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} drifted: run python3 tests/tools/manifest_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
