"""One global figure per round, and it is final: what `fedkube run` prints, what /metrics
and /progress publish while the job runs, and result.json all agree, round by round."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from fedkube.spec.progress import JobResult
from fedkube.testing import manifest, write_manifest
from fedkube.transport.progress_client import fetch_progress
from prometheus_client.parser import text_string_to_metric_families

ROUND_LINE = re.compile(r"^round +(\d+)/\d+ .* loss +(\S+) +accuracy +(\S+)%")


def _metric_pair(url: str) -> tuple[int, float] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    values = {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}
    if "fedkube_global_evaluated_round" not in values:
        return None
    return int(values["fedkube_global_evaluated_round"]), values["fedkube_global_accuracy"]


def test_round_lines_metrics_and_progress_agree_with_the_result(tmp_path: Path) -> None:
    # Sites of very different sizes evaluate in very different times: the fastest site's
    # scores must never be published as the round's figure.
    doc = manifest("figures", sites=5, rounds=8, min_sites=5)
    for site in doc["spec"]["sites"]:
        site["data"]["sklearn"].update(partitioner="quantity", alpha=0.3, seed=5)
    path = write_manifest(tmp_path / "job.yaml", doc)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedkube", "run", str(path), "--output", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    seen_metrics: set[tuple[int, float]] = set()
    seen_progress: set[tuple[int, float]] = set()
    done = threading.Event()

    def poll(port: int) -> None:
        while not done.is_set():
            pair = _metric_pair(f"http://127.0.0.1:{port}/metrics")
            if pair is not None:
                seen_metrics.add(pair)
            p = fetch_progress(f"http://127.0.0.1:{port}/progress")
            if p is not None and p.global_ is not None and p.global_.accuracy is not None:
                seen_progress.add((p.global_.round, p.global_.accuracy))
            time.sleep(0.01)

    poller: threading.Thread | None = None
    for line in proc.stdout:
        lines.append(line.rstrip())
        found = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        if found and poller is None:
            poller = threading.Thread(target=poll, args=(int(found.group(1)),), daemon=True)
            poller.start()
    assert proc.wait(timeout=300) == 0, "\n".join(lines)
    done.set()
    assert poller is not None, "fedkube run said where its metrics are"
    poller.join()

    result = JobResult.model_validate_json((tmp_path / "out" / "result.json").read_bytes())
    final = {h.round: h for h in result.history}
    printed = [ROUND_LINE.match(ln) for ln in lines]
    rows = [(int(m[1]), float(m[2]), float(m[3])) for m in printed if m]
    assert [r for r, _, _ in rows] == list(range(1, 9)), "\n".join(lines)
    for number, loss, accuracy in rows:
        h = final[number]
        assert h.accuracy is not None and h.loss is not None and h.eval_sites == 5
        assert (loss, accuracy) == (round(h.loss, 4), round(100 * h.accuracy, 2)), number
    assert seen_metrics, "the metrics were polled while the job ran"
    for number, accuracy in seen_metrics | seen_progress:
        assert accuracy == final[number].accuracy, f"round {number}: a partial figure leaked"
