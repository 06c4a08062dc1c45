"""When a job's tick reconciles in full: on a change of its aggregator's progress, of its
objects (a watch event), of the site's approvals, or when its resync is due; otherwise the
tick costs no API request. Which job a watched object belongs to, from its labels."""

from __future__ import annotations

import threading

from fedkube_operator.labels import LABEL_JOB, LABEL_JOB_NAMESPACE
from fedkube_operator.resync import JobClock, Touched, full_reconcile_due, owning_job


def settled() -> JobClock:
    return JobClock(
        last_full=100.0,
        progress_url="http://a/progress",
        progress='{"round":3}',
        approvals="fp",
        jitter=0.0,
    )


def test_a_tick_that_sees_nothing_new_is_not_a_full_reconcile() -> None:
    assert not full_reconcile_due(settled(), 110.0, '{"round":3}', "fp", touched=False)


def test_each_change_makes_the_tick_a_full_reconcile() -> None:
    clock = settled()
    assert full_reconcile_due(clock, 110.0, '{"round":4}', "fp", touched=False)  # a round closed
    assert full_reconcile_due(clock, 110.0, None, "fp", touched=False)  # the aggregator is gone
    assert full_reconcile_due(clock, 110.0, '{"round":3}', "fp2", touched=False)  # consent
    assert full_reconcile_due(clock, 110.0, '{"round":3}', "fp", touched=True)  # a pod changed


def test_a_resync_is_due_after_its_period_stretched_by_the_jobs_jitter() -> None:
    clock = settled()
    assert not full_reconcile_due(clock, 129.9, '{"round":3}', "fp", False, resync_seconds=30)
    assert full_reconcile_due(clock, 130.0, '{"round":3}', "fp", False, resync_seconds=30)
    clock.jitter = 0.2
    assert not full_reconcile_due(clock, 135.0, '{"round":3}', "fp", False, resync_seconds=30)
    assert full_reconcile_due(clock, 136.0, '{"round":3}', "fp", False, resync_seconds=30)


def test_resync_zero_reconciles_on_every_tick_and_a_new_clock_at_once() -> None:
    assert full_reconcile_due(settled(), 100.5, '{"round":3}', "fp", False, resync_seconds=0)
    # After an operator restart nothing is remembered: the first tick is a full reconcile.
    assert full_reconcile_due(JobClock(), 0.0, None, "", touched=False)
    jitters = {JobClock().jitter for _ in range(50)}
    assert len(jitters) > 1 and all(0.0 <= j <= 0.25 for j in jitters)


def test_an_object_belongs_to_the_job_its_labels_name_in_its_or_the_sites_namespace() -> None:
    assert owning_job("hospitals", {LABEL_JOB: "breast-cancer"}) == ("hospitals", "breast-cancer")
    in_site = {LABEL_JOB: "breast-cancer", LABEL_JOB_NAMESPACE: "hospitals"}
    assert owning_job("fedkube-system", in_site) == ("hospitals", "breast-cancer")
    assert owning_job("hospitals", {"app": "other"}) is None


def test_a_touched_job_is_taken_once_from_any_thread() -> None:
    touched = Touched()
    job = ("ns", "a")
    threads = [threading.Thread(target=touched.mark, args=(job,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert touched.take(job)
    assert not touched.take(job)
    assert not touched.take(("ns", "b"))
