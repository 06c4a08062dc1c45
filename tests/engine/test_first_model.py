"""The aggregator's first model comes from a child process: the aggregator never imports torch,
the child's model is the one the trainers build, and a refused model is refused in the same
words as before."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fedkube.errors import ModelError
from fedkube.models.first_model import build_in_child
from fedkube.models.plugins import PluginPolicy
from fedkube.models.registry import initial_params
from fedkube.spec import parse_job
from fedkube.testing import LocalJob, manifest


def test_the_childs_model_is_the_one_built_in_process() -> None:
    task = parse_job(manifest(model={"name": "mlp", "hiddenSizes": [16, 8]})).spec.task
    child = build_in_child(task, 30, 2, ())
    here = initial_params(task, 30, 2, PluginPolicy())
    assert list(child) == list(here)  # same tensors, same order
    for name, value in here.items():
        assert child[name].dtype == value.dtype and child[name].shape == value.shape
        assert np.array_equal(child[name], value), name


def test_a_model_the_site_does_not_allow_is_refused_naming_the_field() -> None:
    doc = manifest(model={"importPath": "hospital_models:make"})
    task = parse_job(doc).spec.task
    with pytest.raises(ModelError) as refused:
        build_in_child(task, 30, 2, ())
    message = str(refused.value)
    assert message.startswith("spec.task.model.importPath: import path hospital_models:make")
    assert "--allow-import" in message and "Traceback" not in message


def test_a_factory_that_fails_comes_back_as_a_model_error(tmp_path: Path) -> None:
    doc = manifest(model={"importPath": "no_such_module_here:make"})
    task = parse_job(doc).spec.task
    with pytest.raises(ModelError, match="cannot import module 'no_such_module_here'"):
        build_in_child(task, 30, 2, ("no_such_module_here:*",))


def test_the_aggregator_process_never_maps_torch(tmp_path: Path) -> None:
    """A job runs to the end, and its aggregator, idle or after a round, has not loaded
    torch's library."""
    job = LocalJob(tmp_path, manifest(sites=2, rounds=2, model={"name": "mlp", "hiddenSizes": [8]}))
    try:
        agg = job.start_aggregator()
        job.wait_for(lambda p: True)  # serving: the first model is built
        maps = Path(f"/proc/{agg.pid}/maps").read_text()
        for site in ("site-0", "site-1"):
            job.start_trainer(site)
        job.wait_for(lambda p: p.round >= 1)
        maps += Path(f"/proc/{agg.pid}/maps").read_text()
        result = job.wait_done()
    finally:
        job.stop()
    assert "libtorch" not in maps and "/torch/" not in maps
    assert result.rounds_completed == 2


def test_a_killed_builders_folder_is_removed_by_the_next_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An aggregator SIGKILLed while its child builds the first model leaves the child's
    folder behind (the chaos soak left 14 in /tmp): the next build removes the folders of
    processes that are gone, and only those."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f"fedkube-first-model-{gone.pid}-abc123"
        stale.mkdir()
        (stale / "model.safetensors.tmp").write_bytes(b"half a model")
        busy = tmp_path / f"fedkube-first-model-{running.pid}-def456"
        busy.mkdir()
        other = tmp_path / "fedkube-first-model-notapid"
        other.mkdir()
        task = parse_job(manifest(model={"name": "mlp", "hiddenSizes": [4]})).spec.task
        assert list(build_in_child(task, 30, 2, ())) != []
        assert not stale.exists()
        assert busy.is_dir() and other.is_dir()
        # Its own folder went with the build.
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([busy.name, other.name])
    finally:
        running.kill()
        running.wait()
