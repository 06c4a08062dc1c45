"""The operator's log format (Helm operator.logFormat): json gives a log collector one object
per line, with the level and the object a line is about."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from fedkube_operator.main import configure_logging


@pytest.fixture()
def clean_root() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    root.handlers.clear()
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_json_logs_are_one_object_per_line(
    clean_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json")
    log = logging.getLogger("fedkube.operator")
    log.info("job %s admitted", "breast-cancer")
    log.warning("site hospital-b refused it")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["severity"], e["message"]) for e in lines] == [
        ("info", "job breast-cancer admitted"),
        ("warn", "site hospital-b refused it"),
    ]
    assert all("timestamp" in e for e in lines)


def test_text_logs_stay_lines_for_people(
    clean_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("text")
    logging.getLogger("fedkube.operator").info("job admitted")
    line = capsys.readouterr().err.strip()
    assert line.endswith("operator INFO job admitted")


def test_routine_successes_are_not_logged_and_decisions_and_failures_are(
    clean_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("text")
    objects = logging.getLogger("kopf.objects")
    objects.info("Timer 'on_timer' succeeded.")
    objects.info("Handler 'on_owned_event' succeeded.")
    objects.info("Handler 'on_change' succeeded.")
    objects.error("Timer 'on_timer' failed with an exception and will try again in 2 seconds")
    logging.getLogger("fedkube.operator").info("created Pod ns/job-aggregator")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" INFO ")[-1].split(" ERROR ")[-1] for line in lines] == [
        "Handler 'on_change' succeeded.",
        "Timer 'on_timer' failed with an exception and will try again in 2 seconds",
        "created Pod ns/job-aggregator",
    ]
