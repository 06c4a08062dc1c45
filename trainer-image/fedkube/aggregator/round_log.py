"""The job's record: one entry per closed round, and the sites' evaluations folded into it.

A round's global evaluation is final when published: it is written into the record only when
every site asked to evaluate that model has reported, or the round that asked has ended
(closed or abandoned, so no more reports are coming in time). Until then readers see no
figure for that round, never one computed from the first few sites."""

from __future__ import annotations

import time

import numpy as np

from fedkube.aggregator.rounds import OpenRound, weighted
from fedkube.privacy.accountant import RdpAccountant
from fedkube.spec.progress import (
    SCORE_KEYS,
    Evaluation,
    GlobalScores,
    RoundRecord,
    SecureRoundRecord,
)
from fedkube.stats.score_counts import scores


class RoundLog:
    def __init__(self, held_out_noise: tuple[float, float] | None = None) -> None:
        self.history: list[RoundRecord] = []
        self.initial_evaluation: Evaluation | None = None
        # model version -> site -> (held-out samples, metrics)
        self._evaluations: dict[int, dict[str, tuple[int, dict[str, float]]]] = {}
        # A private job: model version -> site -> its counts (None: it withheld them).
        self._counts: dict[int, dict[str, np.ndarray | None]] = {}
        # evaluation.noiseMultiplier and the delta the held-out epsilon is told at; every
        # noised evaluation is one Gaussian mechanism on each site's held-out records.
        self.held_out_noise = held_out_noise
        self._expected: dict[int, set[str]] = {}  # model version -> sites asked to evaluate it
        self._final: set[int] = set()

    def close_round(self, r: OpenRound, secure: SecureRoundRecord | None = None) -> RoundRecord:
        closed = time.time()
        pairs = [(r.samples[s], m) for s, m in r.updates.items()]
        record = RoundRecord(
            round=r.number,
            sites=sorted(r.updates),
            samples=sum(r.samples.values()),
            train_loss=weighted(pairs, "train_loss"),
            opened_at=r.opened_at,
            closed_at=closed,
            duration_seconds=closed - r.opened_at,
            max_train_seconds=max(m.get("train_seconds", 0.0) for m in r.updates.values()),
            bytes_received=r.bytes_received,
            bytes_sent=r.bytes_sent,
            secure_aggregation=secure,
        )
        self.history.append(record)
        return record

    def expect(self, version: int, site: str) -> None:
        """``site`` was asked to evaluate the model after ``version`` rounds."""
        if version not in self._final:
            self._expected.setdefault(version, set()).add(site)

    def record_evaluation(
        self, version: int, site: str, samples: int, metrics: dict[str, float]
    ) -> None:
        """A site's scores of the model after ``version`` rounds (0: the initial model)."""
        if version in self._final:
            return  # too late: the published figure does not change
        self._evaluations.setdefault(version, {})[site] = (samples, metrics)
        self._maybe_final(version)

    def record_counts(self, version: int, site: str, counts: np.ndarray | None) -> None:
        """A site's noised counts of the model after ``version`` rounds (None: withheld)."""
        if version in self._final:
            return
        self._counts.setdefault(version, {})[site] = counts
        self._maybe_final(version)

    def record_totals(self, version: int, sites: int, totals: np.ndarray) -> None:
        """Counts summed under secure aggregation: the whole figure, at once (each site noised
        its counts too when the job sets evaluation.noiseMultiplier)."""
        self._expected.pop(version, None)
        noised = self.held_out_noise is not None
        self._publish(version, self._from_counts(sites, totals, noised=noised))

    def _maybe_final(self, version: int) -> None:
        answered = set(self._evaluations.get(version, {})) | set(self._counts.get(version, {}))
        if self._expected.get(version, set()) <= answered:
            self.finalize(version)

    def _from_counts(self, sites: int, totals: np.ndarray, noised: bool = False) -> Evaluation:
        samples, figures = scores(totals)
        epsilon = None
        if noised and self.held_out_noise is not None:
            # Counted from the record (it rides in the checkpoint), so a restart forgets none.
            earlier = [self.initial_evaluation, *self.history]
            steps = 1 + sum(1 for e in earlier if e is not None and e.held_out_epsilon is not None)
            noise_multiplier, delta = self.held_out_noise
            accountant = RdpAccountant()
            accountant.step(noise_multiplier, 1.0, steps)
            epsilon = accountant.epsilon(delta)
        return Evaluation(
            eval_sites=sites,
            eval_samples=samples,
            from_counts=True,
            held_out_epsilon=epsilon,
            **{key: figures.get(key) for key in SCORE_KEYS},
        )

    def finalize(self, version: int) -> None:
        """Publish the global evaluation of ``version`` from the reports in so far."""
        if version in self._final or version > len(self.history):
            return
        reports = list(self._evaluations.pop(version, {}).values())
        counted = [c for c in self._counts.pop(version, {}).values() if c is not None]
        self._expected.pop(version, None)
        if counted:
            self._publish(
                version, self._from_counts(len(counted), np.sum(counted, axis=0), noised=True)
            )
            return
        if not reports:
            return  # nobody evaluated it: nothing to publish, and later reports may
        accuracies = [m["accuracy"] for _, m in reports if "accuracy" in m]
        summary = Evaluation(
            eval_sites=len(reports),
            eval_samples=sum(n for n, _ in reports),
            accuracy_spread=max(accuracies) - min(accuracies) if accuracies else None,
            **{key: weighted(reports, key) for key in SCORE_KEYS},
        )
        self._publish(version, summary)

    def _publish(self, version: int, summary: Evaluation) -> None:
        if version in self._final or version > len(self.history):
            return
        self._final.add(version)
        if version == 0:
            self.initial_evaluation = summary
            return
        record = self.history[version - 1]
        for name in Evaluation.model_fields:
            setattr(record, name, getattr(summary, name))

    def latest_global(self) -> GlobalScores | None:
        for h in reversed(self.history):
            if h.accuracy is not None:
                fields = {name: getattr(h, name) for name in Evaluation.model_fields}
                return GlobalScores(round=h.round, **fields)
        return None

    def sites_ever(self) -> list[str]:
        return sorted({s for h in self.history for s in h.sites})
