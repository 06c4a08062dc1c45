"""What a finished job leaves behind: the model (safetensors), its model card and result.json."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from fedkube.aggregator.coordinator import Coordinator
from fedkube.spec.job import spec_summary
from fedkube.spec.progress import JobResult, SiteResult
from fedkube.storage.atomic import write_json
from fedkube.storage.safetensors_file import write_safetensors

MODEL_FILE = "model.safetensors"
CARD_FILE = "model-card.json"
RESULT_FILE = "result.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):  # streamed: the model may be large
            h.update(block)
    return h.hexdigest()


def write_outputs(c: Coordinator, folder: Path) -> JobResult:
    folder.mkdir(parents=True, exist_ok=True)
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
        wall_seconds=time.time() - c.started_wall,
    )
    write_json(folder / RESULT_FILE, result.to_json_dict())
    return result
