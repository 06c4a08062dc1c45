"""One privacy budget per dataset, across every job that reads it: the site's cap
(`site.epsilonCap`) bounds the sum of what all of them spend on the same records.

A dataset is named by the site's data volume, the file's path in it and the digest of its
contents, so a job under a new name, from any namespace, finds the same ledger (the state
claim is the site's, in its own namespace). Each job
has one entry: the epsilon it reserved when it started (its planned spend, from the
accountant) and the epsilon it has spent so far (DP-SGD and noised held-out scores). Until a
job finishes it holds the larger of the two; after, what it spent. Jobs compose by summing
their epsilons (basic composition): never less than the truth, and what a site's privacy
officer can check by hand.

The ledgers live in one folder on the site's state claim, one JSON file per dataset, written
whole under an exclusive lock so that two trainers of different jobs never lose each other's
entries. A job's spend never goes down: a restarted trainer writes the larger of what its
own ledger holds and what the dataset ledger had.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedkube.errors import SiteRefused
from fedkube.storage.atomic import write_json

SCHEMA = 1


@dataclass(frozen=True)
class Dataset:
    """Which records: the site's data volume, the file in it, and its contents' digest."""

    volume: str
    file: str
    sha256: str

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.volume}\0{self.file}\0{self.sha256}".encode()).hexdigest()[
            :32
        ]

    def describe(self) -> str:
        return f"{self.file!r} on {self.volume} (sha256 {self.sha256[:12]}...)"


def dataset_of(volume: str, file: str, path: Path) -> Dataset:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return Dataset(volume, file, h.hexdigest())


def committed(entry: dict[str, Any]) -> float:
    """What a job holds of a dataset's budget: its reservation until it finishes (or what it
    spent, if more), then what it spent."""
    spent = float(entry.get("spent", 0.0))
    if entry.get("finished"):
        return spent
    return max(spent, float(entry.get("reserved", 0.0)))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DatasetBudget:
    """This job's entry in one dataset's ledger, and what every other job holds of it."""

    def __init__(self, folder: Path, dataset: Dataset, job: str, cap: float | None) -> None:
        self.folder = folder
        self.dataset = dataset
        self.job = job
        self.cap = cap
        self.path = folder / f"{dataset.key}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The ledger, read and (when the block changes it) written under an exclusive lock."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{self.dataset.key}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                ledger = self._read()
                before = json.dumps(ledger, sort_keys=True)
                yield ledger
                if json.dumps(ledger, sort_keys=True) != before:
                    write_json(self.path, ledger)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {
                "schema": SCHEMA,
                "dataset": {
                    "volume": self.dataset.volume,
                    "file": self.dataset.file,
                    "sha256": self.dataset.sha256,
                },
                "jobs": {},
            }
        try:
            ledger = json.loads(self.path.read_text())
            if not isinstance(ledger.get("jobs"), dict):
                raise ValueError("it has no 'jobs' object")
        except ValueError as e:
            # Never start again from zero: a ledger that cannot be read stops the job.
            raise SiteRefused(
                f"the privacy ledger of dataset {self.dataset.describe()} at {self.path} "
                f"cannot be read ({e}); the site admin must restore it from a backup before "
                "any job reads this dataset again"
            ) from None
        return dict(ledger)

    def held_by_others(self) -> float:
        with self._locked() as ledger:
            return sum(committed(e) for j, e in ledger["jobs"].items() if j != self.job)

    def reserve(self, planned: float, rows: int | None = None) -> None:
        """Hold ``planned`` epsilon for this job, or refuse it when the dataset's other jobs
        and this one would pass the site's cap. A job that restarts keeps what it held. The
        dataset's row count and when it was read are kept beside: the operator plans the
        next job on this file from them, before any pod."""
        with self._locked() as ledger:
            if rows is not None:
                ledger["dataset"].update(rows=rows, readAt=_now())
            entry = ledger["jobs"].get(self.job, {})
            others = {j: committed(e) for j, e in ledger["jobs"].items() if j != self.job}
            held = sum(others.values())
            mine = max(planned, float(entry.get("spent", 0.0)))
            if self.cap is not None and held + mine > self.cap:
                owners = ", ".join(f"{j} {v:.3g}" for j, v in sorted(others.items()) if v > 0)
                raise SiteRefused(
                    f"the job plans epsilon {mine:.3g} on dataset {self.dataset.describe()}, "
                    f"and the dataset's other jobs hold {held:.3g} of this site's cap "
                    f"{self.cap:g} (Helm value site.epsilonCap){f': {owners}' if owners else ''}"
                    f"; {max(0.0, self.cap - held):.3g} is left. Lower "
                    "spec.privacy.recordLevel.epsilonCap (or raise the noise, or train fewer "
                    "rounds) to fit, or ask the site admin"
                )
            entry.update(reserved=max(planned, float(entry.get("reserved", 0.0))))
            entry.pop("finished", None)
            ledger["jobs"][self.job] = entry

    def record(self, spent: float, delta: float, held_out: float = 0.0) -> None:
        """What this job has spent so far (``held_out`` of it on noised held-out scores);
        never lower than what the ledger had."""
        with self._locked() as ledger:
            entry = ledger["jobs"].setdefault(self.job, {})
            entry["spent"] = max(spent, float(entry.get("spent", 0.0)))
            entry["heldOut"] = max(held_out, float(entry.get("heldOut", 0.0)))
            entry["delta"] = delta

    def finish(self) -> None:
        """The job is over at this site: it holds what it spent, no longer its reservation."""
        with self._locked() as ledger:
            if self.job in ledger["jobs"]:
                ledger["jobs"][self.job]["finished"] = True


def read_ledgers(folder: Path) -> list[dict[str, Any]]:
    """Every dataset's ledger in ``folder`` (for a site's status and its admin)."""
    out = []
    for path in sorted(folder.glob("*.json")):
        if not re.fullmatch(r"[0-9a-f]{32}\.json", path.name):
            continue  # not a dataset's ledger (those are named by the dataset's key)
        ledger = json.loads(path.read_text())
        jobs = ledger.get("jobs", {})
        ledger["held"] = sum(committed(e) for e in jobs.values())
        out.append(ledger)
    return out
