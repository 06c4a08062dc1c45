"""One site's trainer and client as its own copy of the job sets them up: the same for a
trainer pod, `fedkube run`'s processes and the in-process simulation."""

from __future__ import annotations

from pathlib import Path

from fedkube.data.site_data import SiteData
from fedkube.models.plugins import PluginPolicy
from fedkube.privacy.ledger import PrivacyLedger
from fedkube.secagg.params import secagg_params
from fedkube.spec.job import FederatedJob
from fedkube.strategy import build_strategy
from fedkube.trainer.client import TrainerClient
from fedkube.trainer.local import LocalTrainer
from fedkube.transport.link import SiteLink

LEDGER_FILE = "privacy-ledger.json"


def site_trainer(
    job: FederatedJob,
    site: str,
    data: SiteData,
    *,
    plugins: PluginPolicy | None = None,
    epsilon_cap: float | None = None,
    state_dir: Path | None = None,
    kind: type[LocalTrainer] = LocalTrainer,
) -> LocalTrainer:
    """The site's trainer: its strategy half, its allowed plug-ins, and its privacy ledger
    (kept in ``state_dir`` across restarts; the lower of the job's and the site's cap)."""
    spec = job.spec
    ledger = None
    dp = spec.privacy.record_level
    if dp is not None:
        caps = [c for c in (dp.epsilon_cap, epsilon_cap) if c is not None]
        path = state_dir / LEDGER_FILE if state_dir else None
        ledger = PrivacyLedger(dp.delta, min(caps) if caps else None, path)
    return kind(
        spec.task,
        data,
        site,
        spec.personalization,
        spec.privacy,
        ledger,
        build_strategy(spec).site_half(),
        plugins=plugins,
    )


def site_client(
    job: FederatedJob, site: str, link: SiteLink, trainer: LocalTrainer
) -> TrainerClient:
    """The client that serves the aggregator's tasks, checking them against this job."""
    spec = job.spec
    private = spec.privacy.update_level is not None or spec.privacy.record_level is not None
    return TrainerClient(job.name, site, link, trainer, secure=secagg_params(spec), private=private)
