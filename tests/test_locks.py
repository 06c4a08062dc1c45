"""The images' locks (issue 25): every package an image installs is pinned with its hashes,
and the pins satisfy what pyproject.toml asks of each part, so a lock never drifts from the
package it builds. ``trainer-image/lock.py`` rewrites them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "trainer-image" / "locks"
# lock -> the part of pyproject.toml it installs (requirements.py's names)
WRITTEN = {"build": "build", "operator": "operator", "engine-cu132": "engine"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")


def read_lock(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, hashes) of every pin."""
    pins: dict[str, tuple[str, int]] = {}
    name = ""
    for line in path.read_text().splitlines():
        if m := PIN.match(line):
            name = canonicalize_name(m.group(1))
            pins[name] = (m.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
    return pins


def wanted(part: str) -> list[Requirement]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "trainer-image" / "requirements.py"), part],
        capture_output=True,
        text=True,
        check=True,
    )
    return [Requirement(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("lock", sorted(WRITTEN))
def test_a_lock_pins_everything_with_hashes_and_satisfies_pyproject(lock: str) -> None:
    pins = read_lock(LOCKS / f"{lock}.txt")
    assert pins, f"{lock}.txt pins nothing"
    unhashed = sorted(n for n, (_, hashes) in pins.items() if hashes == 0)
    assert unhashed == [], f"{lock}.txt: no hash for {unhashed}"
    for requirement in wanted(WRITTEN[lock]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock}.txt lacks {requirement} (run trainer-image/lock.py {lock})"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock}.txt pins {name}=={version}, pyproject.toml asks {requirement}: "
            f"run trainer-image/lock.py {lock}"
        )


def test_the_operators_lock_holds_no_torch_and_the_engines_holds_its_pin() -> None:
    operator = read_lock(LOCKS / "operator.txt")
    assert "torch" not in operator and "kopf" in operator
    (torch,) = [r for r in wanted("torch")]
    assert read_lock(LOCKS / "engine-cu132.txt")["torch"][0] == str(torch.specifier).lstrip("=")


def test_the_images_install_only_from_their_locks() -> None:
    for dockerfile in (ROOT / "trainer-image" / "Dockerfile", ROOT / "operator" / "Dockerfile"):
        # Each shell command of each instruction, continuation lines joined, comments out.
        lines = [line for line in dockerfile.read_text().splitlines() if not line.startswith("#")]
        commands = [
            " ".join(command.split())
            for instruction in "\n".join(lines).replace("\\\n", " ").splitlines()
            for command in instruction.split("&&")
        ]
        installs = [c for c in commands if re.search(r"\bpip install\b", c)]
        assert installs, dockerfile
        for command in installs:
            assert "--require-hashes" in command or command.endswith(
                "--no-deps --no-build-isolation ."
            ), (dockerfile, command)
