"""The load run, short (`bench/operator_load.py` runs a hundred jobs): ten jobs applied at
once on a control plane of its own, nine on KWOK's simulated node and one with real processes.
Every job gets its pods and a status, the real job succeeds with its status following its
aggregator, no reconcile raises, and every probe the bench reports measured something."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kube_harness.load import run_load, table

JOBS = 10


@pytest.mark.slow
def test_ten_jobs_at_once_on_kwok_and_real_processes(tmp_path: Path) -> None:
    result = run_load(tmp_path, jobs=JOBS, real=1, rounds=8, window=20, timeout=600)
    print("\n" + "\n".join(table({"operator": result})))
    assert len(result.created) == JOBS, result.operator_log[-4000:]
    assert result.real_succeeded() == 1, result.operator_log[-4000:]
    # Every simulated job was reconciled into a phase; none finished (nothing runs there).
    assert all(phase not in (None, "Succeeded", "Failed") for phase in result.phases[1:]), (
        result.phases
    )
    assert result.counters["errors"] == 0, result.operator_log[-4000:]
    assert result.counters["reconciles"] > 0
    # The probes: the audit log saw the operator's requests, the sampler its process, and the
    # status of the real job showed its rounds closing.
    assert result.requests["list pods"] > 0, result.requests
    assert result.cpu_cores > 0 and result.peak_rss_mib > 0
    assert result.lags and min(result.lags) >= 0
