"""How fedkube's processes end, for shells, `fedkube run` and the operator alike."""

from __future__ import annotations

from typing import Final

OK: Final = 0
FAILED: Final = 1  # the job failed (no quorum, a site refused, the aggregator gave up)
BAD_INPUT: Final = 2  # the input is wrong (manifest, data, model): retrying will not help
REFUSED_BY_SITE: Final = 3  # the site's own check refused the job (its dataset's budget)
INTERRUPTED: Final = 130  # 128 + SIGINT: Ctrl-C
TERMINATED: Final = 143  # 128 + SIGTERM: stopped (a pod deleted); it resumes from its checkpoint
