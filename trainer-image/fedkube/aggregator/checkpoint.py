"""Aggregator checkpoints: the global model, the strategy's state, the round and the history,
in one safetensors file replaced atomically after each round."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedkube.errors import CheckpointError
from fedkube.storage.safetensors_file import read_safetensors, write_safetensors
from fedkube.wire.tensors import Params

FILE_NAME = "checkpoint.safetensors"
_MODEL = "model/"
_STRATEGY = "strategy/"


@dataclass
class Checkpoint:
    job: str
    fingerprint: str
    rounds_completed: int
    params: Params
    strategy_arrays: Params = field(default_factory=dict)
    strategy_meta: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    privacy: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0  # how often an aggregator resumed this job from a checkpoint
    # Round 0's outcome: the agreed preprocessing and the statistics report (JSON), if run.
    preprocessing: dict[str, Any] | None = None
    statistics: dict[str, Any] | None = None


def save_checkpoint(folder: Path, cp: Checkpoint) -> Path:
    arrays = {_MODEL + k: v for k, v in cp.params.items()}
    arrays.update({_STRATEGY + k: v for k, v in cp.strategy_arrays.items()})
    state = {
        "job": cp.job,
        "fingerprint": cp.fingerprint,
        "roundsCompleted": cp.rounds_completed,
        "strategy": cp.strategy_meta,
        "history": cp.history,
        "sites": cp.sites,
        "privacy": cp.privacy,
        "restarts": cp.restarts,
        "preprocessing": cp.preprocessing,
        "statistics": cp.statistics,
    }
    path = folder / FILE_NAME
    write_safetensors(path, arrays, {"fedkube": json.dumps(state, sort_keys=True)})
    return path


def load_checkpoint(folder: Path, job: str, fingerprint: str) -> Checkpoint | None:
    """The checkpoint in ``folder``, or None when there is none yet."""
    path = folder / FILE_NAME
    if not path.exists():
        return None
    try:
        arrays, metadata = read_safetensors(path)
        state = json.loads(metadata["fedkube"])
    except Exception as e:  # a damaged file can fail in the library or in JSON
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); move it away to "
            "start the job from round 1"
        ) from None
    if state.get("job") != job or state.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"checkpoint {path} was written for job {state.get('job')!r} with a different task "
            f"or strategy; point spec.checkpoint.path elsewhere or delete it to start afresh"
        )
    return Checkpoint(
        job=job,
        fingerprint=fingerprint,
        rounds_completed=int(state["roundsCompleted"]),
        params={k[len(_MODEL) :]: v for k, v in arrays.items() if k.startswith(_MODEL)},
        strategy_arrays={
            k[len(_STRATEGY) :]: v for k, v in arrays.items() if k.startswith(_STRATEGY)
        },
        strategy_meta=state.get("strategy", {}),
        history=state.get("history", []),
        sites=state.get("sites", {}),
        privacy=state.get("privacy", {}),
        restarts=int(state.get("restarts", 0)),
        preprocessing=state.get("preprocessing"),
        statistics=state.get("statistics"),
    )
