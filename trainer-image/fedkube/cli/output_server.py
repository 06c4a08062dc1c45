"""`fedkube serve-output DIR`: the helper pod behind `fedkube fetch`. It serves a finished
job's output folder (model, model card, result) read-only over HTTP, to whoever holds the
token the fetch gave it, until told it is done or left idle; then it exits.

Only the folder's top-level regular files are served, by the names in its index; a link or
a folder is not followed, so a claim cannot lead it to any other file. Each file's size and
sha256 are in the index, so the client checks what it got.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import stat
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

TOKEN_ENV = "FEDKUBE_FETCH_TOKEN"
CHUNK = 1 << 20


def output_index(folder: Path) -> dict[str, dict[str, int | str]]:
    """Name -> size and sha256 of each top-level regular file in folder."""
    index: dict[str, dict[str, int | str]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
            continue  # links and folders (checkpoints/) are not served
        digest = hashlib.sha256()
        size = 0
        with open(entry.path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        index[entry.name] = {"size": size, "sha256": digest.hexdigest()}
    return index


def serve_output(folder: Path, port: int, token: str, idle_seconds: float) -> int:
    index = output_index(folder)
    last_request = [time.monotonic()]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            print(f"serve-output: {self.command} {urlsplit(self.path).path}", file=sys.stderr)

        def do_GET(self) -> None:
            last_request[0] = time.monotonic()
            url = urlsplit(self.path)
            given = parse_qs(url.query).get("token", [""])[0]
            if not hmac.compare_digest(given.encode(), token.encode()):
                self._send(403, b"a token is needed: this serves only the fetch that started it\n")
                return
            if url.path == "/index.json":
                self._send(200, json.dumps({"files": index}).encode(), "application/json")
            elif url.path.startswith("/files/") and url.path[7:] in index:
                path = folder / url.path[7:]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(index[url.path[7:]]["size"]))
                self.end_headers()
                with path.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        self.wfile.write(chunk)
            elif url.path == "/done":
                self._send(200, b"done\n")
                threading.Thread(target=server.shutdown, daemon=True).start()
            else:
                self._send(404, f"no {url.path}: see /index.json\n".encode())

        def _send(self, code: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)

    def stop_when_idle() -> None:
        while time.monotonic() - last_request[0] < idle_seconds:
            time.sleep(1)
        print(f"serve-output: idle for {idle_seconds:.0f} s, stopping", file=sys.stderr)
        server.shutdown()

    threading.Thread(target=stop_when_idle, daemon=True).start()
    total = sum(int(f["size"]) for f in index.values())
    print(f"serve-output: {len(index)} files ({total} bytes) from {folder} on :{port}", flush=True)
    server.serve_forever()
    server.server_close()
    return 0


def cmd_serve_output(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_ENV, "")
    if len(token) < 16:
        print(
            f"error: {TOKEN_ENV} must hold the fetch's token (16 characters or more)",
            file=sys.stderr,
        )
        return 2
    return serve_output(Path(args.dir), args.port, token, args.idle_seconds)


def serve_output_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve-output", help="(the helper pod of `fedkube fetch`)")
    p.add_argument("--dir", required=True, help="the job's output folder")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--idle-seconds", type=float, default=300.0)
    p.set_defaults(fn=cmd_serve_output)
