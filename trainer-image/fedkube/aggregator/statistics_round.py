"""Round 0: the federated statistics, before any training.

SCHEMA: every site sends its columns and types (and, in a plain job, its label values); the
job stops here, naming the site and the column, when they differ from task.features or from
each other. STATISTICS: every site sends counts and exact sums (``fedkube.stats.layout``), in
the clear or, under secure aggregation, through the same masked stages as a training round,
so the aggregator sees only the totals. From the totals come the report (`fedkube stats`,
statistics.json) and the preprocessing the sites agree (scaling, filling, label vocabulary),
sent with every task after it and kept in the checkpoint."""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from fedkube.aggregator.declines import declines_note
from fedkube.aggregator.messages import why_short
from fedkube.aggregator.round_host import RoundHost
from fedkube.aggregator.rounds import STATISTICS_ROUND, OpenRound
from fedkube.aggregator.secure_rounds import SecureRounds, masked_infos
from fedkube.data.site_statistics import stats_layout
from fedkube.data.table import dataset_scaling
from fedkube.errors import InvalidUpdate, JobFailed, SecureAggregationError
from fedkube.proto import fedkube_pb2 as pb
from fedkube.spec.preprocessing import Preprocessing
from fedkube.spec.statistics import StatisticsReport
from fedkube.stats.agree import agree_preprocessing
from fedkube.stats.layout import Totals, add
from fedkube.stats.schema import (
    ReportedSchema,
    feature_columns,
    label_vocabulary,
    schema_problems,
)
from fedkube.stats.summary import block
from fedkube.wire.tensors import Params, TensorInfo

log = logging.getLogger("fedkube.aggregator")

MAX_ATTEMPTS = 3


class StatisticsHost(RoundHost, Protocol):
    """What round 0 uses of the round engine: secure aggregation's stages, and where its
    outcome goes."""

    secure: SecureRounds | None
    preprocessing: Preprocessing | None
    statistics: StatisticsReport | None

    def close_statistics_round(self, r: OpenRound) -> None: ...


class StatisticsRound:
    def __init__(self, host: StatisticsHost) -> None:
        self.c = host
        self.layout = stats_layout(host.spec)
        self.schemas: dict[str, ReportedSchema] = {}
        self.per_site: dict[str, Params] = {}
        self.vocabulary: list[str] = []
        self.features: list[str] = []

    def site_rows(self) -> dict[str, int]:
        """Each site's row count, where round 0 was answered in the clear."""
        return {site: self.layout.decode(own).rows for site, own in self.per_site.items()}

    # -- answers ------------------------------------------------------------------------------

    def infos(self, r: OpenRound) -> list[TensorInfo]:
        """What an answer to the round's current stage carries."""
        if r.stage == pb.SCHEMA:
            return []
        infos = self.layout.infos()
        return masked_infos(infos) if r.secure is not None else infos

    def take_schema(self, site: str, schema: pb.SiteSchema) -> None:
        columns = {c.name: c.type for c in schema.columns}
        if len(columns) != len(schema.columns) or not columns:
            raise InvalidUpdate("the schema repeats a column or has none", site=site, round=0)
        self.schemas[site] = ReportedSchema(columns, list(schema.labels))

    def take_tensors(self, site: str, tensors: Params) -> None:
        totals = self.layout.decode(tensors)
        if totals.rows <= 0 or (totals.present > totals.rows).any():
            raise InvalidUpdate("the statistics' counts do not add up", site=site, round=0)
        self.per_site[site] = self._in_vocabulary(site, tensors)

    def _in_vocabulary(self, site: str, tensors: Params) -> Params:
        """A plain site counts labels in its own schema's order: line them up."""
        order = self.schemas[site].labels
        if not order:
            return tensors
        counts = np.zeros(self.layout.num_labels, dtype=np.uint32)
        for i, label in enumerate(order):
            counts[self.vocabulary.index(label)] = tensors["labels"][i]
        return {**tensors, "labels": counts}

    # -- the round ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run round 0 to its end: sets the coordinator's preprocessing and statistics."""
        declined = ""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            totals = await self._attempt(attempt)
            if totals is not None:
                self._conclude(totals)
                return
            declined = declines_note(self.c.open.declined) if self.c.open is not None else ""
            self.c.abandon_round()
            why = f": {declined}" if declined else " before the deadline"
            log.warning("round 0 attempt %d: too few sites answered%s", attempt, why)
        raise JobFailed(
            f"the statistics round did not reach {self.c.quorum} sites in {MAX_ATTEMPTS} "
            f"attempts{why_short(self.c.spec, declined)}"
        )

    async def _attempt(self, attempt: int) -> Params | None:
        c = self.c
        self.schemas, self.per_site = {}, {}
        r = c.open_round(STATISTICS_ROUND, pb.SCHEMA, 0, attempt)
        if not await c.stage_answered(r, c.quorum):
            return None
        self._check_schemas()
        answered = set(r.done)
        if c.secure is None:
            c.next_stage(r, pb.STATISTICS, answered)
            if not await c.stage_answered(r, c.quorum):
                return None
            summed: Params | None = None
            for site in sorted(r.done):
                summed = self.per_site[site] if summed is None else add(summed, self.per_site[site])
            return summed
        r.secure = c.secure.new_sum(STATISTICS_ROUND, attempt, self.layout.infos())
        c.next_stage(r, pb.ADVERTISE_KEYS, answered)
        try:
            return await c.secure.run_stages(r, raw_sum=True)
        except SecureAggregationError as e:
            log.warning("round 0 attempt %d: %s", attempt, e)
            return None

    def _check_schemas(self) -> None:
        problems = schema_problems(self.c.spec, self.schemas)
        self.vocabulary, label_problems = label_vocabulary(self.c.spec, self.schemas)
        problems += label_problems
        if problems:
            raise JobFailed(
                "the sites' data do not match; nothing was trained:\n  " + "\n  ".join(problems)
            )
        first = sorted(self.schemas)[0]  # the sites agree: any one's columns will do
        self.features = feature_columns(self.c.spec, first, self.schemas[first])
        log.info("round 0: the schemas of %d sites agree", len(self.schemas))

    def _conclude(self, summed: Params) -> None:
        c, spec = self.c, self.c.spec
        totals = self.layout.decode(summed)
        r = c.open
        assert r is not None
        # Under secure aggregation the sum holds the survivors' masked tensors (the sites
        # that answered the last stage only revealed shares).
        sites = sorted(r.secure.survivors) if r.secure is not None else sorted(r.done)
        pre = agree_preprocessing(spec, totals, self.features, self.vocabulary, self.layout.bins)
        data = spec.data_settings()
        if data is not None and data.standardize == "dataset" and data.sklearn is not None:
            center, scale = dataset_scaling(data.sklearn)
            pre = pre.model_copy(update={"center": center, "scale": scale})
        c.preprocessing = Preprocessing.model_validate(pre.model_dump())
        c.statistics = self.report(totals, sites)
        c.close_statistics_round(r)
        log.info("round 0 closed: statistics of %d rows from %d sites", totals.rows, len(sites))

    def report(self, totals: Totals, sites: list[str]) -> StatisticsReport:
        guards = self.c.spec.statistics
        least, bins = guards.min_bin_count, self.layout.bins
        per_site, withheld = {}, {}
        for site in sites:
            if site not in self.per_site:
                withheld[site] = "secure aggregation: only totals are known"
                continue
            own = self.layout.decode(self.per_site[site])
            if own.rows < guards.min_site_rows:
                withheld[site] = f"fewer than statistics.minSiteRows={guards.min_site_rows} rows"
                continue
            per_site[site] = block(own, self.features, self.vocabulary, bins, least)
        return StatisticsReport(
            job=self.c.job.name,
            sites=sites,
            secure=self.c.secure is not None,
            relative_accuracy=bins.relative_accuracy,
            min_bin_count=least,
            overall=block(totals, self.features, self.vocabulary, bins, least),
            per_site=per_site,
            withheld=withheld,
        )
