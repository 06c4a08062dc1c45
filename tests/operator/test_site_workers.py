"""A site trained by several pods (``spec.pods.trainer.workers``), as the operator makes it
(pure, no cluster): the trainer told to wait for its workers, the worker pods with nothing
of the site's but the manifest, the headless Service they find the trainer by, the gang
labels, and the NetworkPolicy that lets the ranks (and only them) reach one another."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fedkube.spec import parse_job
from fedkube_operator.desired import desired, trainer_name
from fedkube_operator.network_policy import network_policies
from fedkube_operator.plan import plan
from fedkube_operator.site_placement import site_trainer_name
from fedkube_operator.site_workers import WORKERS_PORT, worker_name

from tests.operator.test_plan import SETTINGS, observed, resource
from tests.operator.test_site_placement import HELD
from tests.operator.test_site_policy import data_job

PODS = {
    "trainer": {
        "workers": 3,
        "resources": {"limits": {"cpu": "2"}},
        "nodeSelector": {"gpu": "a100"},
    }
}


def _command(pod: dict[str, Any]) -> list[str]:
    return list(pod["spec"]["containers"][0]["command"])


def test_each_site_gets_its_workers_and_a_headless_service_to_find_its_trainer() -> None:
    r = resource(pods=PODS)
    job = parse_job(r)
    want = desired(r, job, SETTINGS)
    sites = [s.name for s in job.spec.sites]
    assert len(want.pods) == 1 + 3 * len(sites)  # the aggregator, and three ranks a site
    for index, site in enumerate(sites):
        port = WORKERS_PORT + index
        trainer = want.pods[trainer_name("breast-cancer", site)]
        assert _command(trainer)[-2:] == ["--workers-port", str(port)]
        assert trainer["metadata"]["labels"]["fedkube.io/rank"] == "0"
        [service] = [s for s in want.services if s["metadata"]["labels"]["fedkube.io/site"] == site]
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["selector"] == {
            "fedkube.io/job": "breast-cancer",
            "fedkube.io/site": site,
            "fedkube.io/role": "trainer",
        }
        assert service["spec"]["ports"][0]["port"] == port
        host = f"{service['metadata']['name']}.hospitals.svc"
        for rank in (1, 2):
            worker = want.pods[worker_name(trainer_name("breast-cancer", site), rank)]
            labels = worker["metadata"]["labels"]
            assert labels["fedkube.io/role"] == "worker" and labels["fedkube.io/rank"] == str(rank)
            command = _command(worker)
            assert command[:2] == ["fedkube", "trainer-worker"]
            assert command[command.index("--rendezvous") + 1] == f"tcp://{host}:{port}"
            assert command[command.index("--rank") + 1] == str(rank)
            # The job's placement and resources, as the trainer's.
            assert worker["spec"]["nodeSelector"] == {"gpu": "a100"}
            container = worker["spec"]["containers"][0]
            assert container["resources"] == trainer["spec"]["containers"][0]["resources"]
            assert {v["name"] for v in worker["spec"]["volumes"]} <= {"job", "tmp"}
            assert worker["metadata"]["ownerReferences"] == trainer["metadata"]["ownerReferences"]


def test_a_sites_workers_run_beside_its_trainer_in_the_sites_namespace_without_its_volumes() -> (
    None
):
    r = data_job(pods=PODS)
    want = desired(r, parse_job(r), HELD)
    site = r["spec"]["sites"][0]["name"]
    trainer = want.pods[trainer_name("breast-cancer", site)]
    worker = want.pods[worker_name(trainer_name("breast-cancer", site), 1)]
    name = site_trainer_name("hospitals", "breast-cancer", site)
    assert worker["metadata"]["name"] == f"{name}-w1"
    assert worker["metadata"]["namespace"] == trainer["metadata"]["namespace"] == "fedkube-system"
    # The trainer reads the site's data and holds its certificate; the worker neither.
    trainer_volumes = {v["name"] for v in trainer["spec"]["volumes"]}
    assert {"job", "tmp"} < trainer_volumes
    assert {v["name"] for v in worker["spec"]["volumes"]} == {"job", "tmp"}
    service = next(s for s in want.services if s["metadata"]["name"] == f"{name}-ranks")
    assert service["metadata"]["namespace"] == "fedkube-system"
    assert "ownerReferences" not in service["metadata"]
    assert service["metadata"]["labels"]["fedkube.io/job-uid"] == "u-1"


def test_with_a_gang_scheduler_a_sites_ranks_are_one_pod_group() -> None:
    r = resource(pods=PODS)
    want = desired(r, parse_job(r), replace(SETTINGS, gang_scheduler="scheduler-plugins"))
    trainer = trainer_name("breast-cancer", "hospital-a")
    ranks = [want.pods[trainer]] + [want.pods[worker_name(trainer, n)] for n in (1, 2)]
    for pod in ranks:
        assert pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == trainer
        assert pod["spec"]["schedulerName"] == "scheduler-plugins"
    [group] = [
        o for o in want.services if o["kind"] == "PodGroup" and o["metadata"]["name"] == trainer
    ]
    assert group["apiVersion"] == "scheduling.x-k8s.io/v1alpha1"
    assert group["spec"] == {"minMember": 3}
    plain = desired(r, parse_job(r), SETTINGS)
    assert "schedulerName" not in plain.pods[trainer]["spec"]
    assert not [o for o in plain.services if o["kind"] == "PodGroup"]


def test_the_ranks_of_a_site_and_only_they_reach_one_another() -> None:
    r = resource(pods=PODS)
    policies = network_policies(r, parse_job(r), replace(SETTINGS, network_policy=True))
    ranks = [p for p in policies if p["metadata"]["name"].endswith("-ranks")]
    assert len(ranks) == 5
    a = next(p for p in ranks if p["metadata"]["name"] == "breast-cancer-hospital-a-ranks")
    selector = a["spec"]["podSelector"]
    assert selector["matchLabels"] == {
        "fedkube.io/job": "breast-cancer",
        "fedkube.io/site": "hospital-a",
    }
    assert selector["matchExpressions"][0]["values"] == ["trainer", "worker"]
    assert a["spec"]["ingress"] == [{"from": [{"podSelector": selector}]}]
    assert a["spec"]["egress"] == [{"to": [{"podSelector": selector}]}]
    single = resource()
    assert not [
        p
        for p in network_policies(single, parse_job(single), replace(SETTINGS, network_policy=True))
        if p["metadata"]["name"].endswith("-ranks")
    ]


def test_the_plan_creates_the_ranks_services_once() -> None:
    r = resource(pods=PODS)
    made = [o for o in plan(r, observed(), SETTINGS).create if o["kind"] == "Service"]
    names = {o["metadata"]["name"] for o in made}
    assert {f"breast-cancer-trainer-hospital-{c}-ranks" for c in "abcde"} <= names
    seen = observed()
    seen.services = names
    again = [o for o in plan(r, seen, SETTINGS).create if o["kind"] == "Service"]
    assert not [o for o in again if o["metadata"]["name"].endswith("-ranks")]
