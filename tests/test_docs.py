"""The README and the documentation site: a README of two pages that starts with what fedkube
is and the two commands, links that resolve, a site mkdocs builds with --strict (a broken
link, anchor or a page left out of the nav fails it), and a manifest reference written from
the schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.tools import manifest_reference

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def test_the_readme_is_two_pages_and_starts_with_what_fedkube_is_and_the_two_commands() -> None:
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 200, len(lines)
    assert lines[0] == "# fedkube"
    assert "trains one machine-learning model across organisations" in "\n".join(lines[:5])
    first_blocks = re.findall(r"```sh\n(.*?)```", text, re.S)[:2]
    assert first_blocks == [
        "python3 -m pip install -e '.[engine]' && fedkube run examples/breast-cancer.yaml\n",
        "bash tests/run-all.sh\n",
    ]
    assert "bash tests/run-all.sh" in (ROOT / ".ci" / "run").read_text()


def test_every_relative_link_of_the_readme_and_the_chart_readme_resolves() -> None:
    for page in (README, ROOT / "helm" / "fedkube" / "README.md"):
        for target, _ in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    built = tmp_path / "site"
    for page in ("quickstart", "runbooks", "reference/manifest", "threat-model"):
        assert (built / page / "index.html").exists(), page


def test_the_manifest_reference_is_written_from_the_schema_and_covers_every_field() -> None:
    assert manifest_reference.main(["--check"]) == 0
    text = manifest_reference.OUT.read_text()
    for field in ("spec.rounds", "spec.sites[].name", "spec.privacy.recordLevel.epsilonCap"):
        assert f"| `{field}` |" in text, field
    # A row without a description would be a field `kubectl explain` leaves empty.
    assert not re.findall(r"^\| `[^`]+` \| [^|]+ \| [^|]* \|  \|$", text, re.M)
