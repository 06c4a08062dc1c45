"""Editing a running job, field by field (fedkube.spec.edits): the schedule and the pods are
rolled out (pods that read the old spec are recreated, and observedGeneration reaches the edit
once none is left), operational fields apply at once, and everything the sites admitted is
immutable in the CRD."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from fedkube.spec import parse_job
from fedkube.spec.edits import EDITS, immutable_fields, transition_rules
from fedkube.spec.job import JobSpec
from fedkube_operator.crd import spec_schema
from fedkube_operator.desired import desired
from fedkube_operator.plan import plan
from fedkube_operator.rollout import SPEC_DIGEST

from tests.operator.test_plan import SETTINGS, observed, resource


def running(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The job's pods as the API server would list them, running."""
    pods = desired(r, parse_job(r), SETTINGS).pods
    return {name: {**copy.deepcopy(p), "status": {"phase": "Running"}} for name, p in pods.items()}


def edited(r: dict[str, Any], **spec: Any) -> dict[str, Any]:
    out = copy.deepcopy(r)
    out["spec"].update(spec)
    out["metadata"]["generation"] += 1
    out["status"] = {"observedGeneration": r["metadata"]["generation"], "phase": "Running"}
    return out


def seen(pods: dict[str, dict[str, Any]]) -> Any:
    return replace(observed(pods, svc=True, cm=True), has_claim=True, has_network_policies=True)


def test_every_spec_field_has_a_decision() -> None:
    assert set(EDITS) == {f.alias for f in JobSpec.model_fields.values()}
    rules = spec_schema()["x-kubernetes-validations"]
    for field in immutable_fields():
        rule = next(
            r for r in rules if r.get("fieldPath") == f".{field}" and "oldSelf" in r["rule"]
        )
        assert "oldSelf" in rule["rule"] and "create a new job" in rule["message"]
    assert len(transition_rules()) == len(immutable_fields())
    assert {"rounds", "pods"} <= {f for f, (k, _) in EDITS.items() if k == "rolled out"}


def test_more_rounds_recreate_the_running_pods_and_observed_generation_waits_for_them() -> None:
    before = resource(rounds=20)
    pods = running(before)
    after = edited(before, rounds=30)
    p = plan(after, seen(pods), SETTINGS)
    # Every pod read the old manifest: each is recreated, none counted as a failure.
    assert sorted(p.rolling) == sorted(pods) == sorted(p.delete_pods)
    assert p.status.observed_generation == before["metadata"]["generation"]
    assert p.status.aggregator_restarts == 0 and all(s.restarts == 0 for s in p.status.sites)
    assert [e.reason for e in p.events if e.reason == "RollingOut"] == ["RollingOut"]
    assert p.status.total_rounds == 30
    # While they go, nothing of their names is made, and the edit is not yet applied.
    going = plan(after, replace(seen({}), terminating=set(pods)), SETTINGS)
    assert not [o for o in going.create if o["kind"] == "Pod"]
    assert going.status.observed_generation == before["metadata"]["generation"]
    assert not [e for e in going.events if e.reason == "RollingOut"]
    # Gone, then made again from the new spec: the edit is applied.
    again = plan(after, seen({}), SETTINGS)
    made = [o for o in again.create if o["kind"] == "Pod"]
    assert {o["metadata"]["name"] for o in made} == set(pods)
    digests = {o["metadata"]["annotations"][SPEC_DIGEST] for o in made}
    assert len(digests) == 1 and digests != {
        p["metadata"]["annotations"][SPEC_DIGEST] for p in pods.values()
    }
    assert again.status.observed_generation == after["metadata"]["generation"]
    settled = plan(after, seen(running(after)), SETTINGS)
    assert not settled.rolling and not settled.delete_pods
    assert settled.status.observed_generation == after["metadata"]["generation"]


def test_pod_resources_roll_out_and_operational_fields_apply_at_once() -> None:
    before = resource()
    pods = running(before)
    more = edited(before, pods={"trainer": {"resources": {"requests": {"memory": "2Gi"}}}})
    assert sorted(plan(more, seen(pods), SETTINGS).rolling) == sorted(pods)
    for field, value in (("backoffLimit", 9), ("podCleanup", "none")):
        p = plan(edited(before, **{field: value}), seen(pods), SETTINGS)
        assert not p.rolling and not p.delete_pods, field
        assert p.status.observed_generation == before["metadata"]["generation"] + 1


def test_pods_an_older_operator_made_keep_running() -> None:
    before = resource(rounds=20)
    pods = running(before)
    for p in pods.values():
        del p["metadata"]["annotations"][SPEC_DIGEST]
    p = plan(edited(before, rounds=30), seen(pods), SETTINGS)
    assert not p.rolling and not p.delete_pods
