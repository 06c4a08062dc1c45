"""The ports `fedkube run` gives its aggregator: the manifest's when it names them, else free
ones."""

from __future__ import annotations

import socket

from fedkube.cli.launch import free_port
from fedkube.errors import SpecError
from fedkube.spec.job_settings import AggregatorSpec


def chosen_port(aggregator: AggregatorSpec, field: str, key: str, manifest: str) -> int:
    """The manifest's port when it names one (a Prometheus config can point at it), else one
    that is free; a named port already in use is refused before anything starts."""
    if field not in aggregator.model_fields_set:
        return free_port()
    port: int = getattr(aggregator, field)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise SpecError(
                manifest,
                [
                    f"spec.aggregator.{key}: port {port} is in use on this machine ({e.strerror}):"
                    " stop what holds it, or leave the field out and a free port is picked"
                ],
            ) from None
    return port
