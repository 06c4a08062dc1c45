"""The job's first model, built in a short-lived process of its own, so that the aggregator
never imports torch.

Only the first model needs torch: everything after it (means, strategies, checkpoints) is
numpy. Built in the aggregator's own process, torch would stay resident for the whole job
(about 450 MiB of an idle aggregator's 570; a hundred jobs' aggregators would hold 45 GB
doing nothing). So the aggregator asks a child (``python -m fedkube.models.first_model``)
for it: the child reads the task from stdin as JSON, builds the model with the same seed
the trainers use, and writes its floating-point state to a safetensors file; the parent
reads the file (no pickle crosses the boundary) and the child's memory goes with it.

A ModelError in the child (an import path the site does not allow, a factory that raises)
comes back as the same ModelError, its message intact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fedkube.errors import ModelError
from fedkube.spec.task import TaskSpec
from fedkube.storage.safetensors_file import read_safetensors
from fedkube.wire.tensors import Params

# Importing torch and building even a large model takes seconds; a child still running
# after this long is stuck.
BUILD_TIMEOUT_SECONDS = 600.0
# The child's exit status for a ModelError (its message on stderr's last line).
_MODEL_ERROR = 3
# The child's folder names the process that made it: an aggregator killed while its child
# ran (SIGKILL, a pod's container restarted) cannot delete it, so the next one does.
_FOLDER_PREFIX = "fedkube-first-model-"
_FOLDER = re.compile(re.escape(_FOLDER_PREFIX) + r"(\d+)-")


def remove_dead_builders_folders(parent: Path) -> None:
    """Delete the first-model folders in ``parent`` whose process is gone.

    Ours count as gone too: this runs before this process makes one, and a restarted
    container can have its predecessor's process id."""
    for folder in parent.glob(f"{_FOLDER_PREFIX}*"):
        named = _FOLDER.match(folder.name)
        if named is None or not folder.is_dir():
            continue
        pid = int(named.group(1))
        if pid != os.getpid() and _alive(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to judge
        return True
    return True


def build_in_child(
    task: TaskSpec, num_features: int, num_classes: int, allowed_imports: tuple[str, ...]
) -> Params:
    """The first model's parameters, built in a child process. Raises ModelError."""
    request = {
        "task": task.model_dump(mode="json", by_alias=True),
        "numFeatures": num_features,
        "numClasses": num_classes,
        "allowedImports": list(allowed_imports),
    }
    remove_dead_builders_folders(Path(tempfile.gettempdir()))
    with tempfile.TemporaryDirectory(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-") as tmp:
        out = Path(tmp) / "model.safetensors"
        try:
            done = subprocess.run(
                [sys.executable, "-m", "fedkube.models.first_model", str(out)],
                input=json.dumps(request).encode(),
                capture_output=True,
                timeout=BUILD_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ModelError(
                f"building the first model took over {BUILD_TIMEOUT_SECONDS:.0f} s; check "
                "spec.task.model (a factory that hangs?)"
            ) from None
        stderr = done.stderr.decode(errors="replace").strip()
        if done.returncode == _MODEL_ERROR:
            raise ModelError(stderr.splitlines()[-1] if stderr else "the model cannot be built")
        if done.returncode != 0 or not out.exists():
            tail = "\n".join(stderr.splitlines()[-15:])
            raise ModelError(
                f"the process that builds the first model exited with status "
                f"{done.returncode}:\n{tail}"
            )
        arrays, _ = read_safetensors(out)
    return arrays


def main(argv: list[str]) -> int:
    # torch's threads as the pod roles set them (one by default: sites share a few cores).
    threads = int(os.environ.get("FEDKUBE_TORCH_THREADS", "1"))
    from fedkube.models.plugins import PluginPolicy
    from fedkube.models.registry import initial_params
    from fedkube.storage.safetensors_file import write_safetensors

    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    request = json.loads(sys.stdin.buffer.read())
    task = TaskSpec.model_validate(request["task"])
    try:
        params = initial_params(
            task,
            int(request["numFeatures"]),
            int(request["numClasses"]),
            PluginPolicy(tuple(request["allowedImports"])),
        )
    except ModelError as e:
        print(str(e).replace("\n", " "), file=sys.stderr)
        return _MODEL_ERROR
    write_safetensors(Path(argv[0]), params)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
