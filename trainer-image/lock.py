"""Writes the images' locks: every package an image installs, pinned, with its hashes.

    python3 trainer-image/lock.py              # every lock this machine can reach
    python3 trainer-image/lock.py engine-cpu   # one

The images install from these files with ``pip install --require-hashes``, so two sites that
build the same release get the same bytes. Each lock is resolved by uv (``pip install uv``)
from ``pyproject.toml`` for the images' Python (3.11) on Linux x86_64:

- ``build``: what builds fedkube's own package in the image (pyproject's build-system);
- ``operator``: the core and the operator's extra;
- ``engine-cu132``: the core and the engine's extra, torch from PyPI (CUDA 13.2 wheels);
- ``engine-cpu``: the same with torch from PyTorch's CPU index.

Run it after changing a dependency in ``pyproject.toml``; a test fails while a lock no longer
satisfies it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCKS = HERE / "locks"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
PYPI = "https://pypi.org/simple"
TORCH_CPU = "https://download.pytorch.org/whl/cpu"

# lock name -> (requirements.py part, the index torch comes from; None: no torch)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "build": ("build", None),
    "operator": ("operator", None),
    "engine-cu132": ("engine", PYPI),
    "engine-cpu": ("engine", TORCH_CPU),
}


def requirements(part: str) -> str:
    out = subprocess.run(
        [sys.executable, str(HERE / "requirements.py"), part],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def lock(name: str) -> Path:
    part, torch_index = VARIANTS[name]
    target = LOCKS / f"{name}.txt"
    with tempfile.TemporaryDirectory() as tmp:
        wanted = Path(tmp) / f"{name}.in"
        wanted.write_text(requirements(part))
        command = [sys.executable, "-m", "uv", "pip", "compile", "--quiet", "--generate-hashes"]
        command += ["--python-version", PYTHON_VERSION, "--python-platform", PLATFORM]
        command += ["--no-header", "--custom-compile-command", f"trainer-image/lock.py {name}"]
        if torch_index not in (None, PYPI):
            # torch (and what only that index has) from it, everything else from PyPI.
            command += ["--index-url", torch_index, "--extra-index-url", PYPI]
            command += ["--index-strategy", "unsafe-best-match"]
        # Named relative to the folder uv runs in: the lock's "via" lines then say
        # "-r engine-cu132.in", the same on every run, not a temporary path.
        command += [wanted.name, "-o", str(target)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp)
    if done.returncode != 0:
        raise SystemExit(f"lock {name}: uv could not resolve it:\n{done.stderr.strip()}")
    header = (
        f"# The {name} image's lock: written by `python3 trainer-image/lock.py {name}` from\n"
        f"# pyproject.toml, for Python {PYTHON_VERSION} on {PLATFORM}. Do not edit.\n"
    )
    target.write_text(header + target.read_text())
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(VARIANTS)}")
    names = ap.parse_args().names or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        ap.error(f"no lock named {', '.join(unknown)} (have: {', '.join(VARIANTS)})")
    LOCKS.mkdir(exist_ok=True)
    failed = []
    for name in names:
        try:
            print(f"{name}: {lock(name).relative_to(HERE.parent)}")
        except SystemExit as e:
            failed.append(name)
            print(e, file=sys.stderr)
    if failed:
        raise SystemExit(f"not written: {', '.join(failed)}")


if __name__ == "__main__":
    main()
