"""The site's own admission of a job to one of its datasets, before it trains or sends
anything: the job's planned epsilon (from its manifest and the file's rows, with the
accountant) is reserved in the dataset's ledger, or the job is refused when the dataset's
other jobs leave too little of the site's cap. The operator refuses such a job before any pod
when the ledger already knows the file; only the trainer sees a file that is new or changed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedkube.data.table import SiteTable
from fedkube.privacy.dataset_budget import DatasetBudget, dataset_of
from fedkube.privacy.planning import planned_epsilon
from fedkube.spec.job import FederatedJob


@dataclass
class DatasetAdmission:
    """Given to ``prepare_site``: reserves the job's planned epsilon on the dataset it read.
    ``budget`` is then the job's entry, which its ledger keeps up to date."""

    folder: Path | None  # the datasets' ledgers, on the site's state claim
    volume: str  # the site's data volume, as the site admin named it
    job_id: str  # namespace/name
    cap: float | None  # the site's epsilon cap per dataset (Helm site.epsilonCap)
    budget: DatasetBudget | None = None

    def __call__(self, job: FederatedJob, table: SiteTable) -> None:
        data = job.spec.site(table.site).data
        if self.folder is None or data is None or data.file is None:
            return
        dataset = dataset_of(self.volume, data.file.path, Path(table.source))
        self.budget = DatasetBudget(self.folder, dataset, self.job_id, self.cap)
        self.budget.reserve(planned_epsilon(job.spec, table.site, table.rows), table.rows)
