"""What a job's record-level DP will spend at a site, from its manifest and the site's row
count, before anything is trained: the site's trainer reserves it in the dataset's ledger, and
the operator refuses, before any pod, a job that would pass what the ledger leaves. No torch
here: the operator's image has none."""

from __future__ import annotations

from fedkube.privacy.accountant import RdpAccountant
from fedkube.spec.job import JobSpec


def dp_steps(num_examples: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """(sampling rate, steps) for ``epochs`` expected passes in batches of ``batch_size``."""
    q = min(1.0, batch_size / num_examples)
    return q, max(1, round(epochs / q))


def planned_epsilon(spec: JobSpec, site: str, rows: int) -> float:
    """What the job's DP-SGD would spend at this site over every round, at most its own cap
    (the trainer stops there). 0 without record-level DP."""
    dp = spec.privacy.record_level
    if dp is None:
        return 0.0
    data = spec.site(site).data
    fraction = data.held_out_fraction if data is not None else 0.0
    train = max(1, rows - round(rows * fraction))
    q, steps = dp_steps(train, spec.task.batch_size, spec.task.local_epochs)
    plan = RdpAccountant()
    plan.step(dp.noise_multiplier, q, steps * spec.rounds)
    epsilon = plan.epsilon(dp.delta)
    return min(epsilon, dp.epsilon_cap) if dp.epsilon_cap is not None else epsilon
