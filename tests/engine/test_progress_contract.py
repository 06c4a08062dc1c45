"""The aggregator's reports are typed: /progress and result.json follow the checked-in schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fedkube.spec.progress import SCHEMA_FILE, JobResult, Progress, RoundRecord, json_schemas
from pydantic import ValidationError


def test_the_checked_in_schema_is_current() -> None:
    assert SCHEMA_FILE.read_text() == json_schemas(), (
        "the progress models changed: run `python -m fedkube.spec.progress` and commit "
        f"{SCHEMA_FILE.name}"
    )


def test_a_round_record_round_trips_in_camel_case_without_nulls() -> None:
    record = RoundRecord(
        round=3,
        sites=["a", "b"],
        samples=40,
        opened_at=1.0,
        closed_at=1.5,
        duration_seconds=0.5,
        accuracy=0.9,
        personal_accuracy=0.95,
    )
    wire = record.to_json_dict()
    assert wire["durationSeconds"] == 0.5 and wire["personal_accuracy"] == 0.95
    assert "loss" not in wire and "secureAggregation" not in wire, "absent, not null"
    assert RoundRecord.model_validate(wire) == record


def test_a_report_of_another_shape_is_refused_with_the_field_named() -> None:
    with pytest.raises(ValidationError, match="totalRounds"):
        Progress.model_validate({"job": "j", "phase": "Running"})
    with pytest.raises(ValidationError, match="phase"):
        Progress.model_validate({"job": "j", "phase": "Exploded", "totalRounds": 3})


def test_the_example_result_reads_back(tmp_path: Path) -> None:
    doc = {
        "job": "j",
        "phase": "Succeeded",
        "roundsCompleted": 1,
        "totalRounds": 1,
        "sites": [{"name": "a", "samples": 10, "evalSamples": 3, "accuracy": 1.0}],
        "history": [
            {
                "round": 1,
                "sites": ["a"],
                "samples": 10,
                "openedAt": 0,
                "closedAt": 1,
                "durationSeconds": 1,
            }
        ],
        "modelPath": "/m",
        "modelCard": "/c",
        "wallSeconds": 2.0,
    }
    result = JobResult.model_validate_json(json.dumps(doc))
    assert result.sites[0].accuracy == 1.0 and result.history[0].duration_seconds == 1
