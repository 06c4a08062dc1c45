"""The aggregator's HTTP endpoints when a poller gives up first: `fedkube run` and the operator
read /progress with a timeout, and a round can keep the aggregator busy past it. The server
goes on answering, and the job's log gets no traceback for the closed socket."""

from __future__ import annotations

import socket
import threading
import urllib.request

import pytest
from fedkube.transport.http_endpoints import serve_http


def test_a_poller_that_hangs_up_early_leaves_no_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    release = threading.Event()

    def slow_progress() -> bytes:
        release.wait(10)  # busy past the poller's patience
        return b'{"phase": "Running"}' * 4096  # more than the socket buffers take at once

    server = serve_http("127.0.0.1", 0, None, slow_progress)
    port = server.server_address[1]
    try:
        impatient = socket.create_connection(("127.0.0.1", port))
        impatient.sendall(b"GET /progress HTTP/1.1\r\nHost: x\r\n\r\n")
        # Closed with unread data pending: the server's write meets a reset, as a timed-out
        # urllib poller's does.
        impatient.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        impatient.close()
        release.set()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.read() == b"ok\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=10) as r:
            assert r.read().startswith(b'{"phase": "Running"}')
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
