"""The helper behind `fedkube fetch`: serves a job's output files to the token's holder
alone, never a link or a folder, lists each file's size and sha256, and exits when done."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fedkube.cli.launch import free_port

TOKEN = "t" * 32


def _get(port: int, path: str, token: str = TOKEN) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?token={token}", timeout=5) as r:
        body: bytes = r.read()
        return body


def test_it_serves_the_outputs_files_to_the_token_alone_and_stops_when_done(
    tmp_path: Path,
) -> None:
    output = tmp_path / "output"
    (output / "checkpoints").mkdir(parents=True)
    (output / "model.safetensors").write_bytes(b"\x00weights" * 1000)
    (output / "model-card.json").write_text('{"modelSha256": "x"}')
    secret = tmp_path / "site-secret.key"
    secret.write_text("not for the fetch")
    os.symlink(secret, output / "leak.key")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedkube",
            "serve-output",
            "--dir",
            str(output),
            "--port",
            str(port),
        ],
        env={**os.environ, "FEDKUBE_FETCH_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                index = json.loads(_get(port, "/index.json"))["files"]
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, server.stderr
                time.sleep(0.2)
        assert sorted(index) == ["model-card.json", "model.safetensors"]  # no link, no folder
        model = _get(port, "/files/model.safetensors")
        assert model == (output / "model.safetensors").read_bytes()
        assert index["model.safetensors"] == {
            "size": len(model),
            "sha256": hashlib.sha256(model).hexdigest(),
        }
        for path, token in [
            ("/files/model.safetensors", "wrong" * 8),
            ("/index.json", ""),
        ]:
            with pytest.raises(urllib.error.HTTPError) as refused:
                _get(port, path, token)
            assert refused.value.code == 403
        for path in ("/files/leak.key", "/files/../site-secret.key", "/files/checkpoints"):
            with pytest.raises(urllib.error.HTTPError) as missing:
                _get(port, path)
            assert missing.value.code == 404
        assert _get(port, "/done") == b"done\n"
        assert server.wait(10) == 0
    finally:
        server.kill()


def test_it_will_not_start_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FEDKUBE_FETCH_TOKEN"}
    out = subprocess.run(
        [sys.executable, "-m", "fedkube", "serve-output", "--dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "FEDKUBE_FETCH_TOKEN" in out.stderr
