"""``python -m tests.fuzz.run_target NAME CORPUS_DIR [libFuzzer flags]``: one fuzz target
under atheris (coverage-guided libFuzzer), fedkube's modules instrumented. The target's
seeds are written to the corpus folder first; new inputs that reach new code are kept there.
Exit status 0: no crash, no hang; a finding is written as ``crash-*`` or ``timeout-*``
where -artifact_prefix points."""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["fedkube"]):
    from tests.fuzz.targets import TARGETS


def main() -> None:
    name, corpus, *flags = sys.argv[1:]
    target = TARGETS[name]
    folder = Path(corpus)
    folder.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(target.seeds()):
        path = folder / f"seed-{i}"
        if not path.exists():
            path.write_bytes(seed)
    atheris.Setup([sys.argv[0], *flags, str(folder)], target.run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
