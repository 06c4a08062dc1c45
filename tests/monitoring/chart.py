"""The monitoring assets as the chart ships them: rendered by the real helm binary."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.kube_harness.controlplane import ROOT, binaries

CHART = ROOT / "helm" / "fedkube"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        raise RuntimeError("promtool is missing: apt-get install prometheus (run-all.sh does)")
    return found


def rendered(*sets: str, namespace: str = "default") -> list[dict[str, Any]]:
    args = [str(binaries() / "helm"), "template", "t", str(CHART), "--kube-version", "1.35.0"]
    args += ["--namespace", namespace]
    for s in ("site.name=a", "monitoring.prometheusRule.enabled=true", *sets):
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def write_rules(folder: Path, *sets: str) -> Path:
    """The chart's PrometheusRule as a plain Prometheus rules file."""
    rule = next(d for d in rendered(*sets) if d["kind"] == "PrometheusRule")
    path = folder / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path
