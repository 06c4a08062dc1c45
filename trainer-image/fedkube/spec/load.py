"""Reading a manifest file into a FederatedJob, with every problem named by its field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fedkube.errors import SpecError
from fedkube.spec.job import FederatedJob


def field_path(loc: tuple[int | str, ...]) -> str:
    """('spec', 'sites', 2, 'name') -> 'spec.sites[2].name'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(manifest)"


def problems_of(error: ValidationError) -> list[str]:
    lines = []
    for e in error.errors():
        # Unions add the tried member's name to the path; it says nothing to a user.
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "literal_error" and "expected" in e.get("ctx", {}):
            msg = f"must be one of {e['ctx']['expected']}"
        lines.append(f"{field_path(loc)}: {msg}")
    return lines


def parse_job(document: Any, source: str = "manifest") -> FederatedJob:
    if not isinstance(document, dict):
        raise SpecError(source, ["(manifest): expected a mapping with apiVersion, kind, spec"])
    try:
        return FederatedJob.model_validate(document)
    except ValidationError as e:
        raise SpecError(source, problems_of(e)) from None


def load_job(path: str | Path) -> FederatedJob:
    """Read and validate a manifest file. Raises SpecError naming the file and each field."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SpecError(str(p), [f"(file): cannot read it: {e.strerror or e}"]) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise SpecError(str(p), [f"(yaml): not valid YAML: {e}"]) from None
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == "FederatedJob"]
    if len(jobs) != 1:
        found = "none" if not jobs else str(len(jobs))
        if not jobs and len(docs) == 1:
            return parse_job(docs[0], str(p))
        raise SpecError(str(p), [f"(file): expected one FederatedJob document, found {found}"])
    return parse_job(jobs[0], str(p))


def resolve_path(manifest: Path | None, value: str) -> Path:
    """Relative paths in a manifest are relative to the manifest's own folder."""
    p = Path(value)
    if p.is_absolute() or manifest is None:
        return p
    return (manifest.parent / p).resolve()
