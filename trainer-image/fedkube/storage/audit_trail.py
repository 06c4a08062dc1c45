"""An append-only, hash-chained audit trail: one JSON line per decision.

Each entry carries its sequence number, the hash of the entry before it (``prev``) and its own
hash over everything else (``hash``, SHA-256 of the canonical JSON). Editing an entry breaks
its hash; dropping one breaks the sequence and the next entry's ``prev``; swapping two breaks
both. ``verify_trail`` names the first entry that is wrong and how.

A chain alone cannot show that its last entries were cut off: keep its head (the last hash,
``head_of``) somewhere else too, and compare. Appends take an exclusive lock on the file, so
several processes of one site (its trainers, its operator) may write one trail.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class AuditTrail:
    """Appends entries to a trail file (made with its folder when missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        with os.fdopen(fd, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.seek(0)
                last = None
                for line in f:
                    if line.strip():
                        last = line
                previous = json.loads(last) if last else None
                entry: dict[str, Any] = {
                    "seq": previous["seq"] + 1 if previous else 0,
                    "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    "kind": kind,
                    **fields,
                    "prev": previous["hash"] if previous else GENESIS,
                }
                entry["hash"] = _digest(entry)
                f.write(json.dumps(entry, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return entry


def verify_trail(path: Path) -> tuple[int, str | None]:
    """(entries checked, the first problem or None). A problem names the line and the entry,
    and says whether it was edited, dropped or moved."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        return 0, f"{path}: cannot read it: {e.strerror or e}"
    prev, count = GENESIS, 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            entry = json.loads(line)
            seq, kind = int(entry["seq"]), entry.get("kind", "?")
        except (ValueError, KeyError, TypeError):
            return count, f"{where}: not an audit entry (edited, or not a trail)"
        named = f"{where} (entry {seq}, {kind})"
        if entry.get("hash") != _digest(entry):
            return count, f"{named}: edited: its content no longer matches its hash"
        if seq != count:
            later = _line_of(lines, count, number)
            how = (
                f"entry {count} stands later, at line {later}: the trail was reordered"
                if later is not None
                else f"entries {count} to {seq - 1} were dropped before it"
                if seq > count
                else "it repeats or follows a later entry: the trail was reordered"
            )
            return count, f"{named}: expected entry {count} here; {how}"
        if entry.get("prev") != prev:
            return count, f"{named}: it does not follow the entry before it (edited or reordered)"
        prev, count = entry["hash"], count + 1
    return count, None


def _line_of(lines: list[str], seq: int, after: int) -> int | None:
    """The line number, past ``after``, of the entry numbered ``seq``, if one is there."""
    for number, line in enumerate(lines[after:], start=after + 1):
        try:
            if int(json.loads(line)["seq"]) == seq:
                return number
        except (ValueError, KeyError, TypeError):
            continue
    return None


def head_of(path: Path) -> str:
    """The hash of the trail's last entry (GENESIS for none): keep it elsewhere to show that
    nothing was cut off the end."""
    last = GENESIS
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                last = json.loads(line)["hash"]
    return last
