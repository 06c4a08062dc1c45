"""What a finished job leaves behind: the model (safetensors), its model card and result.json."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from fedkube.aggregator.coordinator import Coordinator
from fedkube.data.preprocess import manifest_preprocessing
from fedkube.spec.job import spec_summary
from fedkube.spec.preprocessing import Preprocessing
from fedkube.spec.progress import JobResult, SiteResult
from fedkube.storage.atomic import write_json
from fedkube.storage.safetensors_file import write_safetensors

MODEL_FILE = "model.safetensors"
CARD_FILE = "model-card.json"
RESULT_FILE = "result.json"
PREPROCESSING_FILE = "preprocessing.json"
STATISTICS_FILE = "statistics.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):  # streamed: the model may be large
            h.update(block)
    return h.hexdigest()


def job_preprocessing(c: Coordinator) -> Preprocessing | None:
    """Round 0's agreement, or what the manifest alone says (None: no local site's data)."""
    if c.preprocessing is not None:
        return c.preprocessing
    return manifest_preprocessing(c.spec)


def write_statistics(c: Coordinator, folder: Path) -> Path | None:
    if c.statistics is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return write_json(folder / STATISTICS_FILE, c.statistics.to_json_dict())


def write_outputs(c: Coordinator, folder: Path) -> JobResult:
    if c.statistics_only:
        return _statistics_result(c, folder)
    folder.mkdir(parents=True, exist_ok=True)
    statistics = write_statistics(c, folder)
    pre = job_preprocessing(c)
    pre_path = None
    if pre is not None:
        pre_path = write_json(
            folder / PREPROCESSING_FILE, pre.model_dump(mode="json", by_alias=True)
        )
    model_path = folder / MODEL_FILE
    summary = spec_summary(c.job)
    write_safetensors(model_path, c.params, {"fedkube": json.dumps(summary, sort_keys=True)})
    digest = file_sha256(model_path)
    g = c.log.latest_global()
    card = {
        **summary,
        "roundsCompleted": c.rounds_completed,
        "globalMetrics": g.to_json_dict() if g else {},
        "sitesContributed": c.log.sites_ever(),
        "tensors": {i.name: {"dtype": str(i.dtype), "shape": list(i.shape)} for i in c.infos},
        "modelSha256": digest,
        # Enough to rebuild the model and prepare new rows for it (fedkube predict).
        "task": c.spec.task.model_dump(mode="json", by_alias=True, exclude_none=True),
        "inputShape": list(c.spec.input_shape()),
        "preprocessingSha256": pre.sha256() if pre is not None else None,
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(folder / CARD_FILE, card)
    result = JobResult(
        job=c.job.name,
        phase=c.phase,
        rounds_completed=c.rounds_completed,
        total_rounds=c.spec.rounds,
        global_=g,
        initial_evaluation=c.log.initial_evaluation,
        sites=[
            SiteResult(name=n, **s.summary().model_dump(exclude={"connected"}))
            for n, s in c.sites.items()
        ],
        history=c.history,
        privacy=c.privacy.report(c.history),
        model_path=str(model_path.resolve()),
        model_card=str((folder / CARD_FILE).resolve()),
        preprocessing_path=str(pre_path.resolve()) if pre_path else None,
        statistics_path=str(statistics.resolve()) if statistics else None,
        wall_seconds=time.time() - c.started_wall,
    )
    write_json(folder / RESULT_FILE, result.to_json_dict())
    return result


def _statistics_result(c: Coordinator, folder: Path) -> JobResult:
    """`fedkube stats`: the report alone; no model was trained."""
    statistics = write_statistics(c, folder)
    result = JobResult(
        job=c.job.name,
        phase=c.phase,
        rounds_completed=0,
        total_rounds=0,
        sites=[],
        history=[],
        model_path="",
        model_card="",
        statistics_path=str(statistics.resolve()) if statistics else None,
        wall_seconds=time.time() - c.started_wall,
    )
    write_json(folder / RESULT_FILE, result.to_json_dict())
    return result
