"""The privacy figures tests compare fedkube's against: dp-accounting's own."""

from __future__ import annotations

import dp_accounting


def library_epsilon(q: float, z: float, steps: int, delta: float) -> float:
    """Epsilon at ``delta`` of ``steps`` Gaussian mechanisms (noise multiplier ``z``), each
    on a Poisson sample of rate ``q`` (no sampling when q is 1), by dp-accounting's RDP."""
    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.GaussianDpEvent(z)
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    accountant.compose(event, steps)
    return float(accountant.get_epsilon(delta))
