"""Folding whole updates into the round's sums beside the event loop.

A 100-million-parameter update takes the mean's float64 fold about 0.2 s of memory-bound
work. Run on the event loop, every other transfer stands still meanwhile (the loop feeds
gRPC), and the loop was the busiest thread of the aggregator. So a whole, checked update is
folded on one worker thread (numpy lets go of the GIL in its loops) while the loop serves
the other sites. One thread: folds never overlap, and the accumulator needs no lock (the
mean splits one fold over threads of its own, each on elements of its own).

The round's end waits for the folds in flight (``settle``): an update that arrived whole
before the deadline counts, and no sum is read while a fold writes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from fedkube.aggregator.rounds import OpenRound


class Folds:
    def __init__(self) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedkube-fold")

    def start(
        self, r: OpenRound, fold: Callable[[], None], then: Callable[[BaseException | None], None]
    ) -> asyncio.Task[None]:
        """Run ``fold`` on the worker, then ``then(error)`` on the loop, whatever becomes of
        the caller (a site's stream cut mid-fold changes nothing: the update is whole)."""
        loop = asyncio.get_running_loop()

        async def run() -> None:
            try:
                await loop.run_in_executor(self._worker, fold)
            except BaseException as e:
                then(e)
                raise
            then(None)

        task = loop.create_task(run(), name=f"fold round {r.number}")
        r.folding.add(task)
        task.add_done_callback(r.folding.discard)
        return task

    async def settle(self, r: OpenRound) -> None:
        """The round ends: take no new fold, and wait for those in flight."""
        r.closing = True
        while r.folding:
            await asyncio.gather(*r.folding, return_exceptions=True)
