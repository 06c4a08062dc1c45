"""What a site's evaluation figures may be: each finite and in its metric's range. A figure
out of range was not computed from any model on any data, and would bend the job's."""

from __future__ import annotations

import math

# The metrics the engine's sites report (and their personal_ twins).
RANGES = {"accuracy": (0.0, 1.0), "auc": (0.0, 1.0), "loss": (0.0, math.inf)}
# A plug-in's own metric: any finite figure of a sane size.
ANY = (-1e9, 1e9)


def figure_problems(metrics: dict[str, float]) -> list[str]:
    problems = []
    for name, value in sorted(metrics.items()):
        lo, hi = RANGES.get(name.removeprefix("personal_"), ANY)
        if not (math.isfinite(value) and lo <= value <= hi):
            problems.append(f"{name} = {value:g}, expected {lo:g} to {hi:g}")
    return problems
