"""A short run of every fuzz target (about a minute in all): coverage-guided inputs against
the wire decoders, each codec, secure aggregation's messages, manifests and site files, with
nothing but the promised refusals escaping. ``bench/fuzz.py`` runs them for hours."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.fuzzing import fuzz
from tests.fuzz.targets import TARGETS


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_fuzz_finds_no_crash_and_no_hang(target: str, tmp_path: Path) -> None:
    run = fuzz(target, 8, tmp_path)
    assert run.crashes == 0 and run.hangs == 0, run.log[-4000:]
    # It ran: many inputs, and it reached code beyond the first branch.
    assert run.inputs > 500 and run.coverage > 10, run.log[-2000:]
