"""Where a trainer that reads the site's data runs (pure, no cluster): in the site's own
namespace, with the site's certificate and the site's copy of the manifest; nothing of the
tenant's namespace reaches it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fedkube.spec import parse_job
from fedkube_operator.desired import desired, trainer_name
from fedkube_operator.network_policy import network_policies
from fedkube_operator.plan import plan
from fedkube_operator.plan_model import Observed
from fedkube_operator.site_placement import site_config_name, site_trainer_name

from tests.operator.test_plan import observed, resource
from tests.operator.test_site_policy import SITE, data_job

HELD = replace(SITE, site_namespace="fedkube-system")


def _volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["spec"]["volumes"]}


def test_a_trainer_reading_the_data_runs_in_the_sites_namespace_with_the_sites_certificate() -> (
    None
):
    r = data_job()
    want = desired(r, parse_job(r), HELD)
    for site in (s["name"] for s in r["spec"]["sites"]):
        pod = want.pods[trainer_name("breast-cancer", site)]
        meta = pod["metadata"]
        assert meta["namespace"] == "fedkube-system"
        assert meta["name"] == site_trainer_name("hospitals", "breast-cancer", site)
        # No ownerReference crosses namespaces: labels tie it to the job.
        assert "ownerReferences" not in meta
        labels = meta["labels"]
        assert labels["fedkube.io/job-namespace"] == "hospitals"
        assert labels["fedkube.io/job-uid"] == "u-1"
        assert labels["fedkube.io/site"] == site
        volumes = _volumes(pod)
        # The site's own Secret, never <job>-<site>-tls from the tenant's namespace.
        assert volumes["tls"]["secret"]["secretName"] == f"fedkube-{site}-tls"
        assert volumes["job"]["configMap"]["name"] == site_config_name("hospitals", "breast-cancer")
        assert volumes["site-data"]["persistentVolumeClaim"]["claimName"] == "ward-data"
    # The aggregator stays in the job's namespace, with the job's own Secret.
    agg = want.pods["breast-cancer-aggregator"]
    assert agg["metadata"]["namespace"] == "hospitals"
    assert _volumes(agg)["tls"]["secret"]["secretName"] == "breast-cancer-aggregator-tls"
    copy = want.site_config_map
    assert copy is not None and copy["metadata"]["namespace"] == "fedkube-system"
    assert copy["data"] == want.config_map["data"]


def test_jobs_of_one_name_in_two_namespaces_meet_apart_in_the_sites_namespace() -> None:
    assert site_trainer_name("a", "b-c", "x") != site_trainer_name("a-b", "c", "x")
    assert site_config_name("ward-1", "job") != site_config_name("ward-2", "job")


def test_trainers_that_read_nothing_of_the_site_stay_in_the_jobs_namespace() -> None:
    r = resource()  # built-in data
    want = desired(r, parse_job(r), HELD)
    assert {p["metadata"]["namespace"] for p in want.pods.values()} == {"hospitals"}
    assert want.site_config_map is None
    # Without a site namespace (one team's cluster) the data readers stay there too.
    r = data_job()
    want = desired(r, parse_job(r), SITE)
    assert {p["metadata"]["namespace"] for p in want.pods.values()} == {"hospitals"}


def test_a_job_naming_its_own_secret_for_a_data_reading_site_is_refused() -> None:
    r = data_job()
    r["spec"]["security"]["mutualTls"] = {"siteSecretNames": {"hospital-b": "mine-tls"}}
    settings = replace(HELD, allowed_secrets=("mine-tls",))
    p = plan(r, observed(), settings)
    assert p.create == [] and p.status.phase == "Failed"
    message = next(c.message for c in p.status.conditions if c.type == "SpecValid")
    assert "spec.security.mutualTls.siteSecretNames.hospital-b: 'mine-tls'" in message
    assert "Secret 'fedkube-hospital-b-tls' in namespace 'fedkube-system'" in message
    assert "(Helm value site.tls.secretName)" in message


def test_the_sites_copy_of_the_manifest_is_made_and_follows_the_jobs_terms() -> None:
    r = data_job()
    p = plan(r, observed(), HELD)
    made = [o for o in p.create if o["kind"] == "ConfigMap"]
    assert {o["metadata"]["namespace"] for o in made} == {"hospitals", "fedkube-system"}
    copy = next(o for o in made if o["metadata"]["namespace"] == "fedkube-system")
    trainers = [o for o in p.create if o["kind"] == "Pod" and "-trainer-" in o["metadata"]["name"]]
    assert len(trainers) == 5
    assert {o["metadata"]["namespace"] for o in trainers} == {"fedkube-system"}

    def seen(site_copy: dict[str, Any] | None) -> Observed:
        o = observed(cm=True)
        o.site_config_map = site_copy
        return o

    again = plan(r, seen(copy), HELD)
    assert not [o for o in again.create + again.replace if o["kind"] == "ConfigMap"]
    # The job's rounds change: the site's copy is rewritten.
    r["spec"]["rounds"] = 7
    changed = plan(r, seen(copy), HELD)
    [rewritten] = [o for o in changed.replace if o["kind"] == "ConfigMap"]
    assert rewritten["metadata"]["namespace"] == "fedkube-system"
    assert "rounds: 7" in rewritten["data"]["job.yaml"]


def test_network_policies_let_the_sites_trainers_reach_the_aggregator_across_namespaces() -> None:
    r = data_job()
    settings = replace(HELD, network_policy=True, operator_namespace="fedkube-system")
    policies = network_policies(r, parse_job(r), settings)
    where = {p["metadata"]["name"]: p for p in policies}
    held = next(p for p in policies if p["metadata"]["namespace"] == "fedkube-system")
    selector = held["spec"]["podSelector"]["matchLabels"]
    assert selector == {"fedkube.io/job-uid": "u-1", "fedkube.io/role": "trainer"}
    [to_aggregator] = [e for e in held["spec"]["egress"] if "to" in e]
    target = to_aggregator["to"][0]
    assert target["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "hospitals"
    }
    ingress = where["breast-cancer-aggregator"]["spec"]["ingress"][0]["from"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "fedkube-system"}},
        "podSelector": {"matchLabels": selector},
    } in ingress


def test_the_pods_that_serve_progress_answer_the_operators_token_only() -> None:
    """Each job's /progress token is derived from the operator's key: its aggregator, and a
    trainer relaying a remote aggregator's progress, get it; no other pod does."""
    keyed = replace(HELD, progress_key=b"k" * 32)
    r = data_job()
    want = desired(r, parse_job(r), keyed)
    token = keyed.progress_token(r)
    assert token is not None and len(token) == 64
    agg_env = want.pods["breast-cancer-aggregator"]["spec"]["containers"][0]["env"]
    assert {"name": "FEDKUBE_PROGRESS_TOKEN", "value": token} in agg_env
    for name, pod in want.pods.items():
        if name != "breast-cancer-aggregator":
            env = pod["spec"]["containers"][0]["env"]
            assert all(e["name"] != "FEDKUBE_PROGRESS_TOKEN" for e in env), name
    # Another job (another uid), or another operator's key: another token.
    other = {**r, "metadata": {**r["metadata"], "uid": "u-2"}}
    assert keyed.progress_token(other) != token
    assert replace(keyed, progress_key=b"j" * 32).progress_token(r) != token
    # The aggregator elsewhere: the trainers relay its progress, with the token.
    remote = data_job()
    remote["spec"]["aggregator"] = {"endpoint": "agg.example.org:7070"}
    remote["spec"]["sites"][1]["remote"] = True
    relaying = desired(remote, parse_job(remote), keyed)
    for pod in relaying.pods.values():
        assert {"name": "FEDKUBE_PROGRESS_TOKEN", "value": token} in pod["spec"]["containers"][0][
            "env"
        ]
