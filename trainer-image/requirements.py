"""Prints the requirements of one part of fedkube, read from pyproject.toml, one per line.

The images install dependencies before copying the sources, so that a code change reuses
the dependency layer; this says which dependencies without installing the project:

    python3 trainer-image/requirements.py engine --without torch
    python3 trainer-image/requirements.py torch
    python3 trainer-image/requirements.py operator
    python3 trainer-image/requirements.py build

``engine`` and ``operator`` include the core dependencies; ``torch`` is the engine's pin alone
(it comes from its own index: CPU or CUDA wheels); ``build`` is pyproject's build-system. The
images' locks (``trainer-image/lock.py``) are resolved from these.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    if match is None:
        raise SystemExit(f"{PYPROJECT}: cannot read the requirement {requirement!r}")
    return match.group(0).lower().replace("_", "-")


def requirements(part: str, without: set[str]) -> list[str]:
    pyproject = tomllib.loads(PYPROJECT.read_text())
    if part == "build":
        return list(pyproject["build-system"]["requires"])
    project = pyproject["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    if part == "torch":
        return [r for r in extras["engine"] if _name(r) == "torch"]
    if part not in extras:
        raise SystemExit(f"{PYPROJECT}: no extra named {part!r} (have: {', '.join(extras)})")
    chosen = [*project["dependencies"], *extras[part]]
    return [r for r in chosen if _name(r) not in without]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("part", help="engine, operator, torch or build")
    ap.add_argument("--without", action="append", default=[], help="leave this package out")
    args = ap.parse_args()
    sys.stdout.write("".join(f"{r}\n" for r in requirements(args.part, set(args.without))))


if __name__ == "__main__":
    main()
