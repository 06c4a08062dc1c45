"""Pure: whether a job fits what is left of each dataset's privacy budget, judged before any
pod starts, from the dataset ledgers the site's trainers keep on the state claim (the
operator reads them from Helm siteStatus.stateClaimName).

A ledger records the file's row count when a trainer last read it, so the operator plans the
job's epsilon with the same accountant as the trainer. A file no ledger knows yet (new, or
changed: a new digest is a new dataset) is judged by the trainer when it reads it, before it
trains or sends anything."""

from __future__ import annotations

from typing import Any

from fedkube.privacy.dataset_budget import committed
from fedkube.privacy.planning import planned_epsilon
from fedkube.spec.job import FederatedJob
from fedkube.spec.site_policy import data_reading_sites

from fedkube_operator.settings import OperatorSettings

# Rounding: the trainer's own check compares the same sums.
_SLACK = 1e-9


def _latest(ledgers: list[dict[str, Any]], volume: str, file: str) -> dict[str, Any] | None:
    """The ledger of the file as last read (a changed file has a newer one)."""
    known = [
        ledger
        for ledger in ledgers
        if ledger.get("dataset", {}).get("volume") == volume
        and ledger["dataset"].get("file") == file
        and isinstance(ledger["dataset"].get("rows"), int)
    ]
    return max(known, key=lambda ledger: str(ledger["dataset"].get("readAt", "")), default=None)


def budget_problems(
    job: FederatedJob,
    namespace: str,
    settings: OperatorSettings,
    ledgers: list[dict[str, Any]] | None,
) -> list[str]:
    """Each site of the job whose planned epsilon would pass what the dataset's other jobs
    leave of the site's cap (Helm site.epsilonCap); none without a cap or the ledgers."""
    cap, volume = settings.epsilon_cap, settings.data_volume_name()
    if cap is None or volume is None or ledgers is None or job.spec.privacy.record_level is None:
        return []
    me = f"{namespace}/{job.name}"
    problems = []
    for i in data_reading_sites(job, local_only=True):
        site = job.spec.sites[i]
        assert site.data is not None and site.data.file is not None
        ledger = _latest(ledgers, volume, site.data.file.path)
        if ledger is None:
            continue
        jobs: dict[str, dict[str, Any]] = ledger.get("jobs", {})
        others = {j: committed(e) for j, e in jobs.items() if j != me}
        held = sum(others.values())
        mine = max(
            planned_epsilon(job.spec, site.name, ledger["dataset"]["rows"]),
            float(jobs.get(me, {}).get("spent", 0.0)),
        )
        if held + mine <= cap + _SLACK:
            continue
        owners = ", ".join(f"{j} {v:.3g}" for j, v in sorted(others.items()) if v > 0)
        d = ledger["dataset"]
        problems.append(
            f"spec.privacy.recordLevel.epsilonCap: site {site.name!r} would spend epsilon "
            f"{mine:.3g} on dataset {d['file']!r} on {volume} (sha256 {d.get('sha256', '')[:12]}"
            f"..., {d['rows']} rows), and the dataset's other jobs hold {held:.3g} of this "
            f"site's cap {cap:g} (Helm value site.epsilonCap): {owners}; "
            f"{max(0.0, cap - held):.3g} is left. Lower the job's epsilonCap (or raise the "
            "noise, or train fewer rounds) to fit, or ask the site admin"
        )
    return problems
