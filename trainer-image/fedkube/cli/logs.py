"""Logging set-up shared by the entry points."""

from __future__ import annotations

import logging
import os


def setup_logging(role: str) -> None:
    level = os.environ.get("FEDKUBE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {role} %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("grpc").setLevel(logging.WARNING)
