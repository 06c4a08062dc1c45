"""Reading an aggregator's ``/progress``: `fedkube run`, the operator and the tests poll it."""

from __future__ import annotations

import urllib.request

from pydantic import ValidationError

from fedkube.spec.progress import Progress

# A progress document holds one entry per round and per site; far below this.
MAX_PROGRESS_BYTES = 16 << 20


def fetch_progress(
    url: str | None, timeout: float = 2.0, token: str | None = None
) -> Progress | None:
    """The aggregator's progress, or None when it is not answering (yet), refuses the
    ``token`` or answers nonsense."""
    if url is None:
        return None
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            body = r.read(MAX_PROGRESS_BYTES + 1)
    except (OSError, ValueError):
        return None
    if len(body) > MAX_PROGRESS_BYTES:
        return None
    try:
        return Progress.model_validate_json(body)
    except ValidationError:
        return None
