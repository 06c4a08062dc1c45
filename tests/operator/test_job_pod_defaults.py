"""The site's defaults for job pods (Helm jobPods) on the pods the operator makes: resources
under the job's own, field by field; priority, runtime, labels, annotations and spread the
site's alone; the operator's selector labels out of the site's reach."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from fedkube.errors import SiteSettingsError, SpecError
from fedkube.spec import parse_job
from fedkube_operator.desired import aggregator_name, desired, trainer_name
from fedkube_operator.job_pod_defaults import JobPodDefaults, load_job_pod_defaults
from fedkube_operator.settings import OperatorSettings

from tests.operator.test_plan import resource

DEFAULTS = {
    "resources": {
        "trainer": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "aggregator": {"requests": {"cpu": "250m"}},
    },
    "priorityClassName": "clinical-batch",
    "runtimeClassName": "gvisor",
    "labels": {"cost-centre": "ward-7"},
    "annotations": {"sidecar.istio.io/inject": "false"},
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone"},
        {
            "maxSkew": 2,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"fedkube.io/role": "trainer"}},
        },
    ],
}


def _settings(tmp_path: Path, document: dict) -> OperatorSettings:
    path = tmp_path / "job-pods.yaml"
    path.write_text(yaml.safe_dump(document))
    return replace(OperatorSettings(), job_pod_defaults=load_job_pod_defaults(path))


def pods_of(r: dict, settings: OperatorSettings) -> dict[str, dict]:
    return desired(r, parse_job(r), settings).pods


def test_the_sites_defaults_reach_every_job_pod_and_the_jobs_resources_win(tmp_path: Path) -> None:
    r = resource(pods={"trainer": {"resources": {"requests": {"cpu": "2"}}}})
    pods = pods_of(r, _settings(tmp_path, DEFAULTS))
    trainer = pods[trainer_name("breast-cancer", "hospital-a")]
    # The job's cpu, the site's memory and limit.
    assert trainer["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "2", "memory": "2Gi"},
        "limits": {"memory": "4Gi"},
    }
    aggregator = pods[aggregator_name("breast-cancer")]
    assert aggregator["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "250m"}}
    for pod in pods.values():
        spec, meta = pod["spec"], pod["metadata"]
        assert spec["priorityClassName"] == "clinical-batch"
        assert spec["runtimeClassName"] == "gvisor"
        assert meta["labels"]["cost-centre"] == "ward-7"
        assert meta["labels"]["fedkube.io/job"] == "breast-cancer"
        assert meta["annotations"]["sidecar.istio.io/inject"] == "false"
        zone, host = spec["topologySpreadConstraints"]
        # Without a selector, a constraint spreads this job's pods.
        assert zone == {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"fedkube.io/job": "breast-cancer"}},
        }
        assert host["labelSelector"] == {"matchLabels": {"fedkube.io/role": "trainer"}}
        assert host["whenUnsatisfiable"] == "DoNotSchedule"


def test_without_defaults_the_pods_are_what_the_job_asked(tmp_path: Path) -> None:
    r = resource()
    plain = pods_of(r, OperatorSettings())
    assert plain == pods_of(r, _settings(tmp_path, {}))
    for pod in plain.values():
        assert not {"priorityClassName", "runtimeClassName", "topologySpreadConstraints"} & set(
            pod["spec"]
        )
        assert "sidecar.istio.io/inject" not in pod["metadata"].get("annotations", {})
    assert JobPodDefaults.model_validate({"priorityClassName": ""}) == JobPodDefaults()


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (
            {"labels": {"fedkube.io/job": "other"}},
            "labels: fedkube.io/job: the operator",
        ),
        ({"labels": {"app.kubernetes.io/name": "x"}}, "choose another key"),
        ({"priorityClassName": "High_Priority"}, "priorityClassName"),
        (
            {"resources": {"trainer": {"requests": {"cpu": "lots"}}}},
            "resources.trainer.requests.cpu",
        ),
        ({"topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "zone"}]}, "maxSkew"),
        ({"runtime": "gvisor"}, "runtime"),
    ],
)
def test_a_wrong_default_stops_the_operator_naming_the_file_and_the_value(
    tmp_path: Path, document: dict, problem: str
) -> None:
    with pytest.raises(SiteSettingsError) as caught:
        _settings(tmp_path, document)
    message = str(caught.value)
    assert str(tmp_path / "job-pods.yaml") in message
    assert problem in message, message
    assert "the site's settings are invalid" in message and "jobPods" in message
    assert isinstance(caught.value, SpecError)  # the operator's start catches both


def test_an_unreadable_or_malformed_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SiteSettingsError, match="cannot read the job pods' defaults"):
        load_job_pod_defaults(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [unclosed\n")
    with pytest.raises(SiteSettingsError, match="not valid YAML"):
        load_job_pod_defaults(bad)
