"""`fedkube examples DIR`: write out the example manifests the package ships (the same files
as the source tree's examples/), for `fedkube run` or `kubectl apply` without a checkout."""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

from fedkube import exit_codes

_SHIPPED = (".yaml", ".py")


def shipped_examples() -> dict[PurePosixPath, bytes]:
    """Each example file the package holds, by its path under examples/."""
    found: dict[PurePosixPath, bytes] = {}

    def walk(folder: Traversable, under: PurePosixPath) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                if entry.name != "__pycache__":
                    walk(entry, under / entry.name)
            elif entry.name.endswith(_SHIPPED):
                found[under / entry.name] = entry.read_bytes()

    walk(files("fedkube").joinpath("examples"), PurePosixPath())
    return dict(sorted(found.items()))


def write_examples(target: Path, overwrite: bool) -> list[Path]:
    """Writes every example under target. With a file there already and no overwrite, writes
    nothing and says which."""
    examples = shipped_examples()
    there = [target / p for p in examples if (target / p).exists()]
    if there and not overwrite:
        raise FileExistsError(
            f"{there[0]} exists ({len(there)} of the {len(examples)} example files are there "
            "already): pass --force to overwrite them, or name another folder"
        )
    written = []
    for relative, content in examples.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(content)
        partial.replace(path)  # never a half-written manifest
        written.append(path)
    return written


def cmd_examples(args: argparse.Namespace) -> int:
    target = Path(args.dir)
    try:
        written = write_examples(target, args.force)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    for path in written:
        print(path)
    print(
        f"{len(written)} files in {target}: `fedkube run {target}/breast-cancer.yaml` runs the "
        f"main example here; `kubectl apply -n NAMESPACE -f {target}/breast-cancer.yaml` runs "
        "it with the operator installed",
        file=sys.stderr,
    )
    return 0


def examples_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ex = sub.add_parser("examples", help="write out the example job manifests the package ships")
    ex.add_argument("dir", help="folder to write them into (made if missing)")
    ex.add_argument("--force", action="store_true", help="overwrite example files already there")
    ex.set_defaults(fn=cmd_examples)
