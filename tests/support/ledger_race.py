"""A trainer's reservation in a process of its own, for the dataset ledger's lock test: this
module imports only the ledger, so a spawned process starts in a moment."""

from __future__ import annotations

from multiprocessing.synchronize import Event
from pathlib import Path

from fedkube.errors import SiteRefused
from fedkube.privacy.dataset_budget import Dataset, DatasetBudget

RECORDS = Dataset("claim/hospital-data", "clinic-a.csv", "ab" * 32)


def reserve(folder: str, job: str, planned: float, cap: float, start: Event) -> None:
    """Exit 0 when the reservation fits, 3 (as a refusing trainer does) when it does not."""
    start.wait()
    try:
        DatasetBudget(Path(folder), RECORDS, job, cap).reserve(planned)
    except SiteRefused:
        raise SystemExit(3) from None
