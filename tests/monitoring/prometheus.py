"""A real Prometheus (Debian's package) on a free loopback port, with a generated config:
what the monitoring tests scrape real jobs with and query through its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from fedkube.cli.launch import free_port

from tests.support.waiting import terminate


class Prometheus:
    def __init__(self, folder: Path, rules: Path) -> None:
        self.folder = folder
        self.rules = rules
        self.port = free_port()
        self.targets: list[tuple[str, dict[str, str]]] = []
        self.discovered: list[Any] = []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def scrape(self, address: str, **labels: str) -> None:
        """Scrape ``host:port`` once a second, with these target labels."""
        self.targets.append((address, labels))
        if self.proc is not None:
            self._write_config()
            self._reload()

    def discover(self, configs: list[Any]) -> None:
        """Scrape configs of its own (Kubernetes discovery: tests/monitoring/pod_monitor.py)."""
        self.discovered.extend(configs)
        if self.proc is not None:
            self._write_config()
            self._reload()

    def _write_config(self) -> Path:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(self.rules)],
            "scrape_configs": [
                {
                    "job_name": f"target-{i}",
                    "static_configs": [{"targets": [address], "labels": labels}],
                }
                for i, (address, labels) in enumerate(self.targets)
            ]
            + self.discovered,
        }
        path = self.folder / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self) -> Prometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(
                "prometheus is missing: apt-get install prometheus (run-all.sh does)"
            )
        config = self._write_config()
        log = open(self.folder / "prometheus.log", "wb")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError(f"Prometheus did not start:\n{self.log()}")

    def _reload(self) -> None:
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        urllib.request.urlopen(request, timeout=5).close()

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")
        return list(data["result"])

    def firing(self) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["state"] == "firing"]

    def log(self) -> str:
        path = self.folder / "prometheus.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        terminate(self.proc)
