"""The files a release needs (issue 25): the licence the package and the images claim, and in
the wheel; a changelog, a security policy and a guide for contributors that say what a
reader comes for."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from fedkube import __version__

ROOT = Path(__file__).resolve().parents[1]


def test_the_licence_is_apache_2_and_the_wheel_carries_it(tmp_path: Path) -> None:
    licence = (ROOT / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence  # the whole text, not a pointer to it
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob(f"fedkube-{__version__}-*.whl")
    with zipfile.ZipFile(wheel) as z:
        inside = z.read(f"fedkube-{__version__}.dist-info/licenses/LICENSE").decode()
        metadata = z.read(f"fedkube-{__version__}.dist-info/METADATA").decode()
    assert inside == licence
    assert "License-Expression: Apache-2.0" in metadata


def test_changelog_security_policy_and_contributing_guide() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "keepachangelog.com" in changelog and "## [Unreleased]" in changelog
    security = (ROOT / "SECURITY.md").read_text()
    assert "Report a vulnerability" in security and "never in a public issue" in security.lower()
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    for must in ("bash tests/run-all.sh", "PROTOCOL_VERSION", "SECURITY.md", "CHANGELOG.md"):
        assert must in contributing


def test_the_release_script_names_what_is_missing_before_it_builds_anything(
    tmp_path: Path,
) -> None:
    script = ROOT / "tests" / "tools" / "release.sh"

    def release(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(script), *args], capture_output=True, text=True)

    missing = release("--registry", "registry.example.org")
    assert missing.returncode == 2
    assert "--registry, --key and --out are needed" in missing.stderr
    unknown = release("--registy", "x")
    assert unknown.returncode == 2 and "unknown argument --registy" in unknown.stderr
    key = tmp_path / "release.key"
    out = ["--registry", "r.example.org", "--out", str(tmp_path / "out")]
    no_key = release(*out, "--key", str(key))
    assert no_key.returncode == 2 and f"cannot read the signing key {key}" in no_key.stderr
    key.write_text("not a key")
    no_public = release(*out, "--key", str(key))
    assert no_public.returncode == 2 and f"no public key {tmp_path}/release.pub" in no_public.stderr
    assert not (tmp_path / "out").exists()  # nothing made
