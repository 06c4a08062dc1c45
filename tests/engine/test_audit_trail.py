"""The site's audit trail: appended by several processes at once, and `fedkube audit verify`
names the first entry that was edited, dropped or moved, or says the end was cut off."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

from fedkube import exit_codes
from fedkube.storage.audit_trail import AuditTrail, head_of, verify_trail

from tests.support.cli import fedkube_cli


def trail(path: Path, entries: int = 6) -> list[str]:
    t = AuditTrail(path)
    for i in range(entries):
        t.append("decision", job="ward/clinics", reason=f"step-{i}", message=f"entry {i}")
    return path.read_text().splitlines()


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def verify(path: Path, *args: str) -> tuple[int, str]:
    out = fedkube_cli(["audit", "verify", str(path), *args], timeout=60)
    return out.returncode, out.stdout + out.stderr


def test_an_intact_trail_verifies_and_names_its_head(tmp_path: Path) -> None:
    path = tmp_path / "trail.jsonl"
    lines = trail(path)
    assert verify_trail(path) == (6, None)
    first = json.loads(lines[0])
    assert first["seq"] == 0 and first["prev"] == "0" * 64
    assert json.loads(lines[1])["prev"] == first["hash"]
    code, said = verify(path)
    assert code == 0 and f"6 entries, intact; head {head_of(path)}" in said


def test_an_edited_line_is_named(tmp_path: Path) -> None:
    lines = trail(tmp_path / "trail.jsonl")
    entry = json.loads(lines[3])
    entry["message"] = "nothing happened"
    edited = write(tmp_path / "edited.jsonl", [*lines[:3], json.dumps(entry), *lines[4:]])
    code, said = verify(edited)
    assert code == exit_codes.FAILED
    assert f"{edited}:4 (entry 3, decision): edited" in said, said
    assert "after 3 intact entries" in said


def test_an_edit_whose_hash_was_made_again_breaks_the_next_link(tmp_path: Path) -> None:
    """One who edits an entry and computes its hash anew still cannot make the next entry
    point at it."""
    lines = trail(tmp_path / "trail.jsonl")
    entry = json.loads(lines[2])
    entry["message"] = "rewritten"
    body = {k: v for k, v in entry.items() if k != "hash"}
    entry["hash"] = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    forged = write(tmp_path / "forged.jsonl", [*lines[:2], json.dumps(entry), *lines[3:]])
    code, said = verify(forged)
    assert code == exit_codes.FAILED
    assert f"{forged}:4 (entry 3, decision): it does not follow the entry before it" in said


def test_a_dropped_line_is_named(tmp_path: Path) -> None:
    lines = trail(tmp_path / "trail.jsonl")
    dropped = write(tmp_path / "dropped.jsonl", [*lines[:2], *lines[3:]])
    code, said = verify(dropped)
    assert code == exit_codes.FAILED
    assert f"{dropped}:3 (entry 3, decision): expected entry 2 here" in said
    assert "entries 2 to 2 were dropped before it" in said


def test_two_swapped_lines_are_named(tmp_path: Path) -> None:
    lines = trail(tmp_path / "trail.jsonl")
    swapped = write(tmp_path / "swapped.jsonl", [*lines[:2], lines[3], lines[2], *lines[4:]])
    code, said = verify(swapped)
    assert code == exit_codes.FAILED
    assert f"{swapped}:3 (entry 3, decision): expected entry 2 here" in said
    assert "entry 2 stands later, at line 4: the trail was reordered" in said


def test_entries_cut_off_the_end_show_against_the_recorded_head(tmp_path: Path) -> None:
    path = tmp_path / "trail.jsonl"
    lines = trail(path)
    head = head_of(path)
    cut = write(tmp_path / "cut.jsonl", lines[:-2])
    assert verify(cut)[0] == 0  # a chain alone cannot tell
    code, said = verify(cut, "--head", head)
    assert code == exit_codes.FAILED and "cut off its end" in said


def _append_many(path: str, who: str) -> None:
    t = AuditTrail(Path(path))
    for i in range(40):
        t.append("sent", site=who, round=i)


def test_several_processes_append_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "trail.jsonl"
    workers = [
        multiprocessing.get_context("fork").Process(target=_append_many, args=(str(path), s))
        for s in ("site-a", "site-b", "site-c")
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    assert verify_trail(path) == (120, None)
