"""The site's own admission of a job to one of its datasets, before it trains or sends
anything: the job's planned epsilon (from its manifest and the file's rows, with the
accountant) is reserved in the dataset's ledger, or the job is refused when the dataset's
other jobs leave too little of the site's cap. Only the site can judge this: the operator
sees neither the data nor the other namespaces' jobs' spending."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedkube.data.table import SiteTable
from fedkube.privacy.accountant import RdpAccountant
from fedkube.privacy.dataset_budget import DatasetBudget, dataset_of
from fedkube.spec.job import FederatedJob, JobSpec
from fedkube.trainer.dp_sgd import dp_steps


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
        self.budget.reserve(planned_epsilon(job.spec, table.site, table.rows))
