"""The site decides which import paths a job may run in its processes."""

from __future__ import annotations

import re

import pytest
from fedkube.errors import ModelError
from fedkube.models.plugins import PluginPolicy
from fedkube.spec import parse_job
from fedkube.testing import manifest


def test_only_allowed_patterns_import() -> None:
    policy = PluginPolicy(("hospital_models.*",))
    policy.check("hospital_models.cnn:make", "spec.task.model.importPath")
    with pytest.raises(
        ModelError, match=re.escape("other.models:make is not among this site's allowed")
    ):
        policy.check("other.models:make", "spec.task.model.importPath")


@pytest.mark.parametrize("path", ["torch.hub:load", "subprocess:run", "os:system", "builtins:eval"])
def test_loaders_and_the_system_are_refused_unless_named_exactly(path: str) -> None:
    with pytest.raises(ModelError, match="is refused"):
        PluginPolicy(("*",)).check(path, "spec.task.model.importPath")
    PluginPolicy((path,)).check(path, "spec.task.model.importPath")  # the admin's own choice


def test_a_local_run_allows_the_manifests_own_paths_but_not_torch_hub() -> None:
    doc = manifest()
    doc["spec"]["task"]["model"] = {"importPath": "torch.hub:load", "params": {"trust_repo": True}}
    doc["spec"]["task"]["trainFunction"] = "my_lab.train:loop"
    policy = PluginPolicy.for_local(parse_job(doc).spec.task)
    assert policy.allowed == ("my_lab.train:loop",)
    with pytest.raises(ModelError, match=re.escape("torch.hub:load is refused")):
        policy.check("torch.hub:load", "spec.task.model.importPath")
