"""The chart's values README table and its schema's descriptions, written from the comments in
values.yaml: one source, so the three cannot disagree.

    python3 tests/tools/chart_values_docs.py          # rewrite README.md and values.schema.json
    python3 tests/tools/chart_values_docs.py --check  # exit 1, naming what drifted

A value's description is the comment block right above its key (no blank line between) and the
comment after it on its line. The schema of site.policy is the engine's SitePolicy model's,
descriptions included (`python -m fedkube_operator.crd` writes it), so only the README takes
those values' comments. A value is a key the schema lists under ``properties``; keys
inside a free-form map (labels, resources given as a map) are data, not values.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "fedkube"
START = "<!-- values: written by tests/tools/chart_values_docs.py from values.yaml; edit there -->"
END = "<!-- end of values -->"
MODEL_OWNED = "site.policy"
_KEY = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):(\s.*)?$")


@dataclass
class Value:
    path: str
    description: str
    line: int


def _trailing_comment(rest: str) -> tuple[str, int | None]:
    """The comment after a key's value (outside quotes), and the column its '#' is at."""
    quote = ""
    for i, ch in enumerate(rest):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[i + 1 :].strip(), i
    return "", None


def commented_keys(text: str) -> list[Value]:
    """Every key of a values file with its path and the comments that describe it."""
    out: list[Value] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    last: Value | None = None
    last_column: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            pending, last, last_column = [], None, None
            continue
        if stripped.startswith("#"):
            comment = stripped[1:].strip()
            if last is not None and last_column == indent:
                # A trailing comment that goes on under itself.
                last.description = f"{last.description} {comment}".strip()
            else:
                pending.append(comment)
                last, last_column = None, None
            continue
        match = _KEY.match(line)
        if match is None:  # a list item or a continued value: data, not a key
            pending, last, last_column = [], None, None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        rest = match.group(3) or ""
        trailing, column = _trailing_comment(rest)
        last = Value(".".join(k for _, k in stack), " ".join([*pending, trailing]).strip(), number)
        last_column = None if column is None else len(line) - len(rest) + column
        out.append(last)
        pending = []
    return out


def schema_node(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in path.split("."):
        props = (node or {}).get("properties")
        if not isinstance(props, dict) or part not in props:
            return None
        node = props[part]
    return node


def documented_values(values_text: str, schema: dict[str, Any]) -> list[Value]:
    """The keys the schema lists as values (not data inside a free-form map)."""
    return [v for v in commented_keys(values_text) if schema_node(schema, v.path) is not None]


def _default(values: dict[str, Any], path: str) -> str:
    node: Any = values
    for part in path.split("."):
        node = node[part]
    if isinstance(node, dict) and node:
        text = json.dumps(node, separators=(", ", ": "))
    else:
        text = json.dumps(node)
    return f"`{text}`"


def values_table(values_text: str, schema: dict[str, Any]) -> str:
    values = yaml.safe_load(values_text)
    rows = ["| value | default | what it is |", "|---|---|---|"]
    for v in documented_values(values_text, schema):
        node = schema_node(schema, v.path) or {}
        default = "" if "properties" in node else _default(values, v.path)
        description = v.description.replace("|", "\\|")
        rows.append(f"| `{v.path}` | {default} | {description} |")
    return "\n".join(rows)


def problems(values_text: str, schema: dict[str, Any]) -> list[str]:
    """Values without a description, and keys of values.yaml the schema does not know."""
    out = []
    known = {v.path for v in documented_values(values_text, schema)}
    for v in commented_keys(values_text):
        parent = v.path.rpartition(".")[0]
        parent_node = schema_node(schema, parent) if parent else schema
        free_form = parent_node is None or "properties" not in parent_node
        if v.path in known and not v.description:
            out.append(f"values.yaml:{v.line}: {v.path} has no comment; describe it above its key")
        elif v.path not in known and not free_form:
            out.append(f"values.yaml:{v.line}: {v.path} is not in values.schema.json; add it")
    return out


def render(chart: Path) -> tuple[str, str, list[str]]:
    """(README text, schema text, problems) as they should be."""
    values_text = (chart / "values.yaml").read_text()
    schema = json.loads((chart / "values.schema.json").read_text())
    for v in documented_values(values_text, schema):
        node = schema_node(schema, v.path)
        owned = v.path == MODEL_OWNED or v.path.startswith(MODEL_OWNED + ".")
        if node is not None and v.description and not owned:
            node["description"] = v.description.replace("`", "")
    readme = (chart / "README.md").read_text()
    if START not in readme or END not in readme:
        return readme, "", [f"README.md: no {START} ... {END} section for the values table"]
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    readme = f"{head}{START}\n{values_table(values_text, schema)}\n{END}{tail}"
    return readme, json.dumps(schema, indent=2) + "\n", problems(values_text, schema)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 on drift")
    ap.add_argument("--chart", type=Path, default=CHART)
    args = ap.parse_args(argv)
    readme, schema, found = render(args.chart)
    for name, text in (("README.md", readme), ("values.schema.json", schema)):
        path = args.chart / name
        if not text or path.read_text() == text:
            continue
        if args.check:
            found.append(
                f"{name} differs from what values.yaml says: run "
                "python3 tests/tools/chart_values_docs.py"
            )
        else:
            path.write_text(text)
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
