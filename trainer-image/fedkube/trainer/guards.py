"""What a site remembers so that an aggregator cannot get more from it by asking again, kept
in its state folder so that a restarted trainer remembers too:

- the rounds it revealed shares for (a second contribution to one would let the aggregator
  subtract two sums over different survivors), and the survivors of the latest: a round run
  again is answered only with the same release (``Contribution``) for the same survivors;
- whether it revealed its counts of the final model (once a job);
- the models it released noised scores of, by the digest of the parameters it received (not
  the aggregator's version number): a model scored again and again would let the noise be
  averaged away.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedkube.storage.atomic import write_json

GUARDS_FILE = "site-guards.json"


class SiteGuards:
    def __init__(self, folder: Path | None = None) -> None:
        self.path = folder / GUARDS_FILE if folder is not None else None
        state = json.loads(self.path.read_text()) if self.path and self.path.exists() else {}
        self.folder = folder
        self.revealed: set[int] = {int(r) for r in state.get("revealed", [])}
        last = state.get("lastReveal") or {}
        self.last_reveal: tuple[int, list[str]] | None = (
            (int(last["round"]), [str(s) for s in last["survivors"]]) if last else None
        )
        self.scored_final = bool(state.get("scoredFinal", False))
        self.scored_models: set[str] = set(state.get("scoredModels", []))

    def reveal(self, round: int, final: bool, survivors: list[str]) -> None:
        self.revealed.add(round)
        self.last_reveal = (round, sorted(survivors))
        self.scored_final = self.scored_final or final
        self._save()

    def survivors_of(self, round: int) -> list[str] | None:
        """The survivors this site revealed its shares of ``round`` for, when it is the
        latest round it revealed; None otherwise."""
        if self.last_reveal is not None and self.last_reveal[0] == round:
            return self.last_reveal[1]
        return None

    def first_score(self, digest: str) -> bool:
        """True (and remembered) the first time this model is scored; False after."""
        if digest in self.scored_models:
            return False
        self.scored_models.add(digest)
        self._save()
        return True

    def _save(self) -> None:
        if self.path is None:
            return
        write_json(
            self.path,
            {
                "revealed": sorted(self.revealed),
                "lastReveal": {"round": self.last_reveal[0], "survivors": self.last_reveal[1]}
                if self.last_reveal
                else None,
                "scoredFinal": self.scored_final,
                "scoredModels": sorted(self.scored_models),
            },
        )
