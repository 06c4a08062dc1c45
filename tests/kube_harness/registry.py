"""A real OCI registry for the tests: CNCF distribution's ``registry`` (built from the Go
module proxy by tests/tools/build-binaries.sh), serving plain HTTP on loopback with its
storage in a folder of the test's. The release script pushes images, signatures, SBOM
attestations and the chart to it; the node agent and helm pull from it."""

from __future__ import annotations

import secrets
import subprocess
import time
import urllib.request
from pathlib import Path

from fedkube.cli.launch import free_port

from tests.support.waiting import terminate


class Registry:
    def __init__(self, binary: Path, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn, formatter: text}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'storage'}}}, "
            "delete: {enabled: true}}\n"
            # A secret of its own: uploads are one registry's, behind no load balancer.
            f"http: {{addr: '{self.host}', secret: {secrets.token_hex(16)}}}\n"
        )
        log = (self.root / "registry.log").open("wb")
        # Tracing would try to export to a collector that is not there.
        env = {"OTEL_TRACES_EXPORTER": "none", "PATH": "/usr/bin:/bin"}
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", str(config)], stdout=log, stderr=log, env=env
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the registry exited: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the registry did not answer on {self.host}: {self.log()[-3000:]}")

    def log(self) -> str:
        return (self.root / "registry.log").read_text(errors="replace")

    def stop(self) -> None:
        terminate(self.proc)
