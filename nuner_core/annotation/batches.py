"""Prompts held in memory, answered batch by batch through the one request path (``asking.py``).

The annotate stage streams sentences from a parquet file into ``responses.parquet``
(``annotate.py``). Another stage that asks an LLM (the evaluation's ``llm`` competitor,
paper section 6) holds its prompts in memory and wants one outcome per prompt, batch by
batch: :func:`complete_batches`, with annotation's guarantees (the response cache first,
leases, one request per distinct prompt, the client's retries, limits and budget). When
the budget stops the run, the requests in flight finish (and are cached) and every prompt
not asked yet gets the outcome ``not_requested``; the call returns normally, with
``stopped`` saying why. A fatal API error (bad key, unknown model) raises
:class:`StageError` at once, its message naming the caller's config fields (``field``).

Batches are answered one after the other (each completely before the next starts), so a
caller can measure each batch's wall time, and a budget stop leaves whole early batches.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from nuner_core.annotation.accounting import RunStats
from nuner_core.annotation.asking import NEVER_REACHED, Asker, Messages, Outcome, run_coroutine
from nuner_core.annotation.client import FatalAPIError
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.annotation.ratelimit import Clock
from nuner_core.stage_api import Progress, StageError

PROGRESS_EVERY_S = 0.5

__all__ = ["BatchResult", "Clock", "Messages", "Outcome", "complete_batches"]  # what a caller needs


@dataclass
class BatchResult:
    outcomes: list[list[Outcome]]  # per batch, per prompt, in the order given
    stats: RunStats  # this run's requests, tokens, cost, retries, failures, cache hits
    batch_s: list[float]  # wall seconds per batch (the client's one-off creation left out)
    requested: list[int]  # per batch: distinct prompts that were to be asked for (not cached, not offline, budget left)
    stopped: str | None = None  # the budget's reason, when it stopped the run
    budget_note: str | None = None  # then: the cap is per run, and what was spent on these prompts so far
    joined: str | None = None  # another run met on the same prompts (and joined), if any
    wall_s: float = 0.0
    limiter_wait_s: float = 0.0  # time spent waiting for the rate limiter


def complete_batches(
    config: AnnotateConfig,
    batches: Sequence[Sequence[Messages]],
    cache_dir: Path,
    *,
    field: str = "annotate",
    progress: Progress | None = None,
    clock: Clock | None = None,
    lease_clock: Clock | None = None,
    rng: random.Random | None = None,
    environ: Mapping[str, str] | None = None,
) -> BatchResult:
    """One :class:`Outcome` per prompt of every batch; see the module docstring.

    ``field`` is the config path of ``config`` (``evaluate.llms[gpt]``): error messages name its
    fields (``evaluate.llms[gpt].api_key_env``).
    """
    asker = Asker(config, Path(cache_dir), field=field, environ=os.environ if environ is None else environ, clock=clock,
                  lease_clock=lease_clock, rng=rng)
    return run_coroutine(_Batches(asker, batches, progress).run())


class _Batches:
    def __init__(self, asker: Asker, batches: Sequence[Sequence[Messages]], progress: Progress | None) -> None:
        self.asker = asker
        self.batches = batches
        self.progress = progress
        self.total = sum(len(b) for b in batches)
        self.done = 0
        self.last_progress = 0.0

    async def run(self) -> BatchResult:
        started = time.monotonic()
        outcomes: list[list[Outcome]] = []
        batch_s: list[float] = []
        requested: list[int] = []
        asker = self.asker
        try:
            async with asker:
                for prompts in self.batches:
                    t0, setup = time.monotonic(), asker.setup_s
                    out, asked = await self._batch(prompts)
                    outcomes.append(out)
                    batch_s.append(time.monotonic() - t0 - (asker.setup_s - setup))  # the client's creation is not the batch's
                    requested.append(asked)
        except* FatalAPIError as group_error:
            raise StageError(str(group_error.exceptions[0])) from None
        asker.stats.sentences = self.total
        budget = asker.budget
        return BatchResult(
            outcomes=outcomes, stats=asker.stats, batch_s=batch_s, requested=requested, stopped=budget.stopped,
            budget_note=f"{budget.per_run(asker.field)}; {budget.spent_so_far()}" if budget.stopped else None,
            joined=asker.joined.describe() if asker.joined else None, wall_s=time.monotonic() - started,
            limiter_wait_s=asker.limiter_wait_s,
        )

    async def _batch(self, prompts: Sequence[Messages]) -> tuple[list[Outcome], int]:
        """The batch's outcomes in order, and how many distinct prompts were to be asked for."""
        asker = self.asker
        keys = [asker.keys.key(messages) for messages in prompts]
        distinct = list(dict.fromkeys(keys))
        found = dict(zip(distinct, asker.lookup(distinct)))
        out: list[Outcome | None] = [None] * len(prompts)
        asked: set[str] = set()
        slots = asyncio.Semaphore(2 * asker.config.max_in_flight)  # prompts making their own request at once
        async with asyncio.TaskGroup() as group:
            for position, (key, messages) in enumerate(zip(keys, prompts)):
                outcome = asker.settle_now(found[key])
                if outcome is not None:
                    self._assign(out, position, outcome)
                    continue
                if not asker.budget.stopped:
                    asked.add(key)
                await slots.acquire()
                group.create_task(self._answer(out, position, key, messages, slots))
        return [o if o is not None else Outcome(None, error=NEVER_REACHED) for o in out], len(asked)

    async def _answer(self, out: list[Outcome | None], position: int, key: str, messages: Messages,
                      slots: asyncio.Semaphore) -> None:
        self._assign(out, position, await self.asker.answer(key, messages, slots))

    def _assign(self, out: list[Outcome | None], position: int, outcome: Outcome) -> None:
        out[position] = outcome
        self.done += 1
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self.last_progress >= PROGRESS_EVERY_S or self.done == self.total:
            self.last_progress = now
            s = self.asker.stats
            self.progress.update(self.done, self.total, f"{self.asker.config.model}: {s.cache_hits:,} cached, "
                                                        f"{s.requests:,} requests, {sum(s.failures.values()):,} failed, "
                                                        f"${s.cost_usd:,.4f}")
