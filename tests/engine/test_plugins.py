"""The site decides which import paths a job may run in its processes."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_a_local_run_allows_only_the_manifests_own_modules_and_what_the_user_names(
    tmp_path: Path,
) -> None:
    """`fedkube run` is an allow-list too: an import path of the manifest runs only when its
    module is a file (or package) in the manifest's own folder; the standard library and
    installed packages never, whatever their name (a deny-list missed posix:system)."""
    (tmp_path / "my_lab").mkdir()
    (tmp_path / "my_lab" / "__init__.py").write_text("")
    (tmp_path / "my_lab" / "train.py").write_text("def loop(*a, **k):\n    return {}\n")
    (tmp_path / "hospital_models.py").write_text("def make(**k):\n    return None\n")
    # A file shadowing the standard library in the folder does not make it the manifest's.
    (tmp_path / "posix.py").write_text("")
    for hostile in ("posix:system", "io:open", "torch:load", "numpy:load", "pandas:read_pickle",
                    "pydoc:locate", "torch.hub:load", "os:system", "builtins:eval"):  # fmt: skip
        doc = manifest()
        doc["spec"]["task"]["model"] = {"importPath": hostile}
        doc["spec"]["task"]["trainFunction"] = "my_lab.train:loop"
        policy = PluginPolicy.for_local(parse_job(doc).spec.task, tmp_path)
        assert policy.allowed == ("my_lab.train:loop",), hostile
        with pytest.raises(ModelError, match=r"is not among this site's allowed|is refused"):
            policy.check(hostile, "spec.task.model.importPath")
    doc = manifest()
    doc["spec"]["task"]["model"] = {"importPath": "hospital_models:make"}
    assert PluginPolicy.for_local(parse_job(doc).spec.task, tmp_path).allowed == (
        "hospital_models:make",
    )
    # Elsewhere (no folder, or another one) the same path is the user's to allow by name.
    elsewhere = PluginPolicy.for_local(parse_job(doc).spec.task, tmp_path / "my_lab")
    assert elsewhere.allowed == ()
    named = PluginPolicy.for_local(parse_job(doc).spec.task, None, ("hospital_models:*",))
    named.check("hospital_models:make", "spec.task.model.importPath")
