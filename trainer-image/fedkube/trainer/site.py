"""One site's trainer and client as its own copy of the job sets them up: the same for a
trainer pod, `fedkube run`'s processes and the in-process simulation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedkube.codec import build_codec
from fedkube.codec.error_feedback import UplinkEncoder
from fedkube.data.preprocess import local_preprocessing
from fedkube.data.site_data import SiteData, site_data
from fedkube.data.site_statistics import site_schema, site_statistics
from fedkube.data.table import SiteTable, read_site_table
from fedkube.errors import DataError
from fedkube.models.plugins import NO_PLUGINS, PluginPolicy
from fedkube.privacy.dataset_budget import DatasetBudget
from fedkube.privacy.ledger import PrivacyLedger
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.params import secagg_params
from fedkube.secagg.signed_keys import SigningIdentity
from fedkube.spec.job import FederatedJob, JobSpec
from fedkube.spec.preprocessing import Preprocessing
from fedkube.strategy import build_strategy
from fedkube.trainer.client import TrainerClient
from fedkube.trainer.guards import SiteGuards
from fedkube.trainer.local import LocalTrainer
from fedkube.transport.link import SiteLink
from fedkube.wire.tensors import Params

LEDGER_FILE = "privacy-ledger.json"


def site_trainer(
    job: FederatedJob,
    site: str,
    data: SiteData,
    *,
    plugins: PluginPolicy | None = None,
    epsilon_cap: float | None = None,
    state_dir: Path | None = None,
    personal_dir: Path | None = None,
    kind: type[LocalTrainer] = LocalTrainer,
    dataset: DatasetBudget | None = None,
    workers_port: int | None = None,
) -> LocalTrainer:
    """The site's trainer: its strategy half, its allowed plug-ins, and its privacy ledger
    (kept in ``state_dir`` across restarts; the lower of the job's and the site's cap; with
    ``dataset``, also counted in that dataset's budget across jobs). Its personal model is
    saved in ``personal_dir`` (default ``state_dir``). With ``spec.pods.trainer.workers``
    above 1 it is rank 0 of the site's workers: started beside it, or, with
    ``workers_port``, worker pods that join it there."""
    spec = job.spec
    ledger = None
    dp = spec.privacy.record_level
    path = state_dir / LEDGER_FILE if state_dir else None
    if dp is not None:
        caps = [c for c in (dp.epsilon_cap, epsilon_cap) if c is not None]
        ledger = PrivacyLedger(dp.delta, min(caps) if caps else None, path, dataset)
    elif spec.evaluation.noise_multiplier is not None:
        # Noised scores without DP-SGD: the site still counts what its held-out records
        # gave (at the default delta, 1e-5).
        ledger = PrivacyLedger(1e-5, None, path, dataset)
    trainer = kind(
        spec.task,
        data,
        site,
        spec.personalization,
        spec.privacy,
        ledger,
        build_strategy(spec).site_half(),
        plugins=plugins,
        personal_dir=personal_dir or state_dir,
    )
    workers = spec.pods.trainer.workers
    if workers > 1:
        from fedkube.trainer.workers import start_workers  # torch.distributed: only if asked

        start_workers(trainer, workers, plugins or NO_PLUGINS, workers_port)
    return trainer


@dataclass
class PendingSite:
    """A site whose job starts with round 0: its raw rows answer the schema and statistics
    stages, and its trainer is made from them once the preprocessing is agreed."""

    job: FederatedJob
    table: SiteTable
    make: Callable[[SiteData], LocalTrainer]
    # Made at start when the job needs no round 0 (it can still answer one: `fedkube stats`).
    ready: LocalTrainer | None = None

    @property
    def rows(self) -> int:
        return self.table.rows

    def schema(self, secure: bool) -> pb.SiteSchema:
        report = site_schema(self.table, secure)
        return pb.SiteSchema(
            columns=[pb.Column(name=c.name, type=c.type) for c in report.columns],
            labels=report.labels,
        )

    def statistics(self, secure: bool) -> Params:
        return site_statistics(self.job.spec, self.table, secure)

    def trainer(self, preprocessing: Preprocessing | None) -> LocalTrainer:
        if self.ready is not None:
            return self.ready
        spec = self.job.spec
        pre = preprocessing or local_preprocessing(spec, self.table.feature_names)
        check_agreement(spec, self.table, pre)
        trainer = self.make(site_data(spec, self.table, pre))
        trainer.warm_up()
        return trainer


def check_agreement(spec: JobSpec, table: SiteTable, pre: Preprocessing) -> None:
    """The aggregator relays round 0's agreement; what this site's own manifest fixes (the
    settings, the columns, the labels it lists) must be as the manifest says."""
    data = spec.site(table.site).data
    assert data is not None
    differ = [
        name
        for name, mine, theirs in (
            ("standardize", data.standardize, pre.standardize),
            ("missing", data.missing, pre.missing),
            ("features", table.feature_names, pre.features),
            ("labels", spec.task.labels or pre.labels, pre.labels),
        )
        if mine != theirs
    ]
    if differ:
        raise DataError(
            table.site,
            f"the preprocessing the aggregator sent differs from this site's manifest in "
            f"{', '.join(differ)}; the site trains only what its own manifest agreed",
        )


def prepare_site(
    job: FederatedJob,
    site: str,
    manifest: Path | None,
    make: Callable[[SiteData], LocalTrainer],
    data_dir: Path | None = None,
    admit: Callable[[FederatedJob, SiteTable], None] | None = None,
) -> PendingSite:
    """The site's rows (inside ``data_dir`` when given), and its trainer made now unless the
    job starts with round 0 (whose agreed preprocessing it needs). ``admit`` sees the rows
    first and may refuse the job (the dataset's budget) before anything is computed."""
    table = read_site_table(job.spec, site, manifest, data_dir)
    if admit is not None:
        admit(job, table)
    pending = PendingSite(job, table, make)
    if not job.spec.needs_statistics():
        pending.ready = pending.trainer(None)
    return pending


def site_client(
    job: FederatedJob,
    site: str,
    link: SiteLink,
    trainer: LocalTrainer | PendingSite,
    state_dir: Path | None = None,
    tls_dir: Path | None = None,
) -> TrainerClient:
    """The client that serves the aggregator's tasks, checking them against this job. With
    mutual TLS (``tls_dir``) its secure-aggregation keys are signed with the site's
    certificate, and every other site's are checked against the consortium CA."""
    spec = job.spec
    private = spec.privacy.update_level is not None or spec.privacy.record_level is not None
    codec = build_codec(spec.communication.uplink)
    uplink = UplinkEncoder(codec, state_dir, spec.training_fingerprint()) if codec else None
    return TrainerClient(
        job.name,
        site,
        link,
        trainer,
        secure=secagg_params(spec),
        private=private,
        uplink=uplink,
        downlink=build_codec(spec.communication.downlink),
        identity=SigningIdentity.from_folder(
            tls_dir, spec.security.mutual_tls.consortium if spec.security.mutual_tls else None
        )
        if tls_dir is not None and spec.security.secure_aggregation is not None
        else None,
        job_sites={s.name: s.max_samples for s in spec.sites},
        score_noise=spec.evaluation.noise_multiplier,
        guards=SiteGuards(state_dir),
    )
