"""/metrics (Prometheus), /progress (JSON the operator and `fedkube run` poll) and /healthz:
the aggregator serves all three; a trainer whose aggregator is at another organisation serves
/progress, relayed over its authenticated channel, to its own cluster's operator.

/progress names the sites, their sample counts and every round: on Kubernetes it answers
only the operator, which sends the job's token (``FEDKUBE_PROGRESS_TOKEN`` in the pod, made
by the operator from its own key). /healthz answers anyone (the kubelet); /metrics answers a
scraper, which the NetworkPolicies (networkPolicy.enabled) narrow to the listed namespaces."""

from __future__ import annotations

import hmac
import os
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

# Where a pod finds the token its /progress asks for (set by the operator).
PROGRESS_TOKEN_ENV = "FEDKUBE_PROGRESS_TOKEN"


def progress_token() -> str | None:
    return os.environ.get(PROGRESS_TOKEN_ENV) or None


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A poller that gave up before the answer came (its own timeout, while a round keeps
        # this process busy) has closed its socket: not the server's error, and the standard
        # library's traceback for it would bury the job's log.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def serve_http(
    host: str,
    port: int,
    metrics: Callable[[], bytes] | None,
    progress: Callable[[], bytes | None],
    token: str | None = None,
) -> ThreadingHTTPServer:
    """Start the server on a daemon thread; both callables must be safe to call from it and
    return the body (``progress``: the JSON of ``fedkube.spec.progress.Progress``). With a
    ``token``, /progress answers only a request bearing it."""
    expected = f"Bearer {token}".encode() if token else None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics" and metrics is not None:
                body, ctype = metrics(), CONTENT_TYPE_LATEST
            elif (
                path == "/progress"
                and expected is not None
                and not hmac.compare_digest(
                    (self.headers.get("Authorization") or "").encode(), expected
                )
            ):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Bearer realm="fedkube progress"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            elif path == "/progress":
                found = progress()
                if found is None:
                    self.send_error(503, "no progress yet")
                    return
                body, ctype = found, "application/json"
            elif path == "/healthz":
                body, ctype = b"ok\n", "text/plain"
            else:
                self.send_error(404, "try /metrics, /progress or /healthz")
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
            pass

    server = _QuietServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="fedkube-http", daemon=True).start()
    return server
