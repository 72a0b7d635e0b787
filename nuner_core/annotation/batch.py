"""Prompts held in memory, answered through the one LLM client: the annotate stage's guarantees for other stages.

The annotate stage streams sentences from a parquet file into ``responses.parquet``
(``annotate.py``). Another stage that asks an LLM (the evaluation's ``llm`` competitor,
paper section 6) holds its prompts in memory and wants one outcome per prompt, batch by
batch. :func:`complete_batches` gives it what annotation has, with the same modules:

- **cache first**: an answer is looked up in the response cache (``cache.py``; keyed on
  model + messages + sampling, not on the endpoint) before anything is sent, so a rerun
  costs nothing; an answer is written there as soon as it arrived complete and valid, so a
  killed run loses nothing but the requests in flight;
- **leases**: a prompt another live run is asking for is waited for, not asked again;
- **one request per distinct prompt**: identical prompts in a call share one answer;
- **the client** (``client.py``): ``AsyncOpenAI(max_retries=0)``, its one retry loop, the
  rate limiter (requests, tokens, in flight), the budget (``max_cost``, ``max_requests``)
  with reservations, the accounting (``RunStats``);
- **a clean stop**: when the budget stops the run, the requests in flight finish (and
  are cached) and every prompt not asked yet gets the outcome ``not_requested``; the batch
  returns normally, with ``stopped`` saying why. A fatal API error (bad key, unknown model)
  raises :class:`StageError` at once, its message naming the caller's config fields.

Batches are answered one after the other (each completely before the next starts), so a
caller can measure each batch's wall time, and a budget stop leaves whole early batches.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Sequence

from nuner_core.annotation.accounting import Budget, BudgetExhausted, RunStats
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.stage_api import Progress, StageError

log = logging.getLogger("nuner.llm")
LEASE_POLL_S = 0.2  # how often a prompt leased by another run is looked up (real time: other processes' time)
PROGRESS_EVERY_S = 0.5

Messages = Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class Outcome:
    """What became of one prompt."""

    content: str | None  # the answer text; None: no answer (``error`` says why)
    from_cache: bool = False  # answered before this run (or by another run, or by an identical prompt of this call)
    prompt_tokens: int | None = None  # as the endpoint reported them when the answer was made (None: not reported)
    completion_tokens: int | None = None
    finish_reason: str | None = None  # "stop", "length" (a truncated answer that was accepted), ...
    error: str | None = None  # "<reason>: <detail>"; reasons: a client failure reason, not_requested, not_cached

    @property
    def reason(self) -> str | None:
        return None if self.error is None else self.error.split(":", 1)[0]


@dataclass
class BatchResult:
    outcomes: list[list[Outcome]]  # per batch, per prompt, in the order given
    stats: RunStats  # this run's requests, tokens, cost, retries, failures, cache hits
    batch_s: list[float]  # wall seconds per batch (the client's one-off creation left out)
    requested: list[int]  # per batch: distinct prompts that were asked for (not cached, not shared)
    stopped: str | None = None  # the budget's reason, when it stopped the run
    joined: str | None = None  # another run met on the same prompts (and joined), if any
    wall_s: float = 0.0
    limiter_wait_s: float = 0.0  # time spent waiting for the rate limiter


def complete_batches(
    config: AnnotateConfig,
    batches: Sequence[Sequence[Messages]],
    cache_dir: Path,
    *,
    field_name: str = "annotate",
    progress: Progress | None = None,
    clock: Any = None,
    rng: random.Random | None = None,
    environ: Mapping[str, str] | None = None,
) -> BatchResult:
    """One :class:`Outcome` per prompt of every batch; see the module docstring.

    ``field_name`` is the config path of ``config`` (``evaluate.llms[gpt]``): error messages
    name its fields (``evaluate.llms[gpt].api_key_env``) rather than annotate's.
    """
    from nuner_core.annotation.annotate import _run_coroutine

    run = _Batches(config, batches, Path(cache_dir), field_name, progress, clock, rng,
                   os.environ if environ is None else environ)
    return _run_coroutine(run.run())


@dataclass
class _Job:
    """One distinct prompt of a batch and where its outcome goes."""

    key: str
    messages: Messages
    positions: list[int] = field(default_factory=list)


class _Batches:
    def __init__(self, config, batches, cache_dir, field_name, progress, clock, rng, environ):
        from nuner_core.annotation.cache import Holder, KeyMaker
        from nuner_core.annotation.ratelimit import RealClock

        self.config: AnnotateConfig = config
        self.batches = batches
        self.cache_dir = cache_dir
        self.field = field_name
        self.progress = progress
        self.clock = clock or RealClock()
        self.rng = rng
        self.environ = environ
        self.stats = RunStats()
        self.budget = Budget(config.max_requests, config.max_cost, config.price(), self.stats)
        self.keys = KeyMaker(config.model, config.sampling())
        self.holder = Holder()
        self.leased: set[str] = set()
        self.joined: Any = None
        self.client: Any = None
        self.limiter: Any = None
        self.setup_s = 0.0  # seconds spent creating the client (imports, connection pool), once per run
        self.total = sum(len(b) for b in batches)
        self.done = 0
        self._last_progress = 0.0

    def _rename(self, message: str) -> str:
        """The client's messages name annotate's fields; here they are ``field``'s."""
        return message.replace("annotation stopped", f"{self.field}: stopped").replace("annotate.", f"{self.field}.")

    async def run(self) -> BatchResult:
        from nuner_core.annotation.cache import ResponseCache
        from nuner_core.annotation.client import FatalAPIError

        started = time.monotonic()
        outcomes: list[list[Outcome]] = []
        batch_s: list[float] = []
        requested: list[int] = []
        with ResponseCache(self.cache_dir) as cache:
            self.cache = cache
            renewer = asyncio.create_task(self._renew_leases())
            try:
                async with AsyncExitStack() as stack:
                    self.stack = stack
                    for prompts in self.batches:
                        t0, setup = time.monotonic(), self.setup_s
                        out, asked = await self._batch(prompts)
                        outcomes.append(out)
                        batch_s.append(time.monotonic() - t0 - (self.setup_s - setup))  # the client's creation is not the batch's
                        requested.append(asked)
            except* FatalAPIError as group_error:
                raise StageError(self._rename(str(group_error.exceptions[0]))) from None
            finally:
                renewer.cancel()
                for key in list(self.leased):  # a run that stops early lets the others have its prompts at once
                    cache.release(key, self.holder)
        self.stats.sentences = self.total
        return BatchResult(
            outcomes=outcomes, stats=self.stats, batch_s=batch_s, requested=requested, stopped=self.budget.stopped,
            joined=self.joined.describe() if self.joined else None, wall_s=time.monotonic() - started,
            limiter_wait_s=self.limiter.waited_s if self.limiter else 0.0,
        )

    async def _batch(self, prompts: Sequence[Messages]) -> tuple[list[Outcome], int]:
        out: list[Outcome | None] = [None] * len(prompts)
        jobs: dict[str, _Job] = {}
        for position, messages in enumerate(prompts):
            key = self.keys.key(messages)
            jobs.setdefault(key, _Job(key, messages)).positions.append(position)
        keys = list(jobs)
        found = self.cache.get_many(keys)
        asked = 0
        tasks = asyncio.Semaphore(2 * self.config.max_in_flight)  # request tasks alive at once
        async with asyncio.TaskGroup() as group:
            for key, cached in zip(keys, found):
                job = jobs[key]
                if cached is not None:
                    self._assign(out, job, self._cached(cached), hit=True)
                elif self.config.offline:
                    self._assign(out, job, Outcome(None, error="not_cached: offline and no cached answer"))
                elif self.budget.stopped:
                    self.stats.not_requested += len(job.positions)
                    self._assign(out, job, Outcome(None, error=f"not_requested: budget ({self.budget.stopped})"))
                else:
                    asked += 1
                    await tasks.acquire()
                    group.create_task(self._bounded(tasks, functools.partial(self._ask, out, job)))
        return [o if o is not None else Outcome(None, error="not_requested: never reached") for o in out], asked

    @staticmethod
    async def _bounded(tasks: asyncio.Semaphore, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()  # the coroutine is made only now: a task cancelled before it starts leaves none un-awaited
        finally:
            tasks.release()

    @staticmethod
    def _cached(cached) -> Outcome:
        return Outcome(cached.response, True, cached.prompt_tokens, cached.completion_tokens, cached.finish_reason)

    def _assign(self, out: list[Outcome | None], job: _Job, outcome: Outcome, *, hit: bool = False, asked: bool = False) -> None:
        """The job's outcome at each of its positions; the first of an asked prompt is the request's, the others shared."""
        for n, position in enumerate(job.positions):
            if asked and n > 0:
                if outcome.content is not None:
                    outcome = Outcome(outcome.content, True, outcome.prompt_tokens, outcome.completion_tokens,
                                      outcome.finish_reason)
                    self.stats.shared += 1
                elif not (outcome.reason or "").startswith("not_requested"):
                    self.stats.failures[outcome.reason or "failed"] += 1
                else:
                    self.stats.not_requested += 1
            out[position] = outcome
        if hit:
            self.stats.cache_hits += len(job.positions)
            self.stats.accepted_empty += len(job.positions) * (not (outcome.content or "").strip())
        self.done += len(job.positions)
        self._report()

    async def _ask(self, out: list[Outcome | None], job: _Job) -> None:
        """Take the prompt's lease (waiting while another live run holds it), then use its answer or ask for it."""
        from nuner_core.annotation.cache import CachedAnswer
        from nuner_core.annotation.client import AnswerFailed

        key = job.key
        while True:
            other = self.cache.lease(key, self.holder, self.config.lease_s)
            if other is None:
                break
            if self.joined is None:
                self.joined = other
                log.warning("%s: another run is asking for some of the same prompts (%s); this run takes its answers "
                            "from the cache as they arrive", self.field, other.describe())
            await asyncio.sleep(LEASE_POLL_S)
            cached = self.cache.get(key)
            if cached is not None:
                self.stats.from_other_run += len(job.positions)
                self._assign(out, job, self._cached(cached))
                return
        self.leased.add(key)
        answered = False
        try:
            cached = self.cache.get(key)  # answered between the lookup and the lease
            if cached is not None:
                self._assign(out, job, self._cached(cached), hit=True)
                return
            if self.budget.stopped:
                self.stats.not_requested += 1
                self._assign(out, job, Outcome(None, error=f"not_requested: budget ({self.budget.stopped})"), asked=True)
                return
            client = await self._client()
            try:
                answer = await client.complete(job.messages)
            except AnswerFailed as exc:
                self.stats.failures[exc.reason] += 1
                self._assign(out, job, Outcome(None, error=f"{exc.reason}: {exc.detail}"), asked=True)
            except BudgetExhausted as exc:
                self.stats.not_requested += 1
                self._assign(out, job, Outcome(None, error=f"not_requested: budget ({exc})"), asked=True)
            else:
                self.cache.put_and_release(key, CachedAnswer(answer.content, answer.prompt_tokens, answer.completion_tokens,
                                                             answer.finish_reason, answer.served_model), self.holder)
                answered = True
                self.stats.answered += 1
                self.stats.accepted_empty += not answer.content.strip()
                self.stats.accepted_truncated += answer.finish_reason == "length"
                self._assign(out, job, Outcome(answer.content, False, answer.prompt_tokens, answer.completion_tokens,
                                               answer.finish_reason), asked=True)
        finally:
            if not answered:
                self.cache.release(key, self.holder)  # failed or stopped: another run may try
            self.leased.discard(key)

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_s / 3)
            if self.leased:
                self.cache.renew(list(self.leased), self.holder, self.config.lease_s)

    async def _client(self):
        """The client, created on the first prompt not in the cache (a fully cached run needs no key)."""
        from nuner_core.annotation.client import LLMClient, api_key_from
        from nuner_core.annotation.ratelimit import RateLimiter

        if self.client is None:
            started = time.monotonic()
            api_key = api_key_from(self.environ, self.config.api_key_env, self.field)
            self.limiter = RateLimiter(self.config.requests_per_minute, self.config.tokens_per_minute,
                                       self.config.max_in_flight, self.clock)
            client = LLMClient(self.config, api_key=api_key, limiter=self.limiter, budget=self.budget, stats=self.stats,
                               clock=self.clock, rng=self.rng)
            self.client = await self.stack.enter_async_context(client)
            self.setup_s += time.monotonic() - started
            log.info("%s: requesting %s at %s", self.field, self.config.model, client.url)
        return self.client

    def _report(self) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY_S or self.done == self.total:
            self._last_progress = now
            s = self.stats
            self.progress.update(self.done, self.total, f"{self.config.model}: {s.cache_hits:,} cached, {s.requests:,} "
                                                        f"requests, {sum(s.failures.values()):,} failed, ${s.cost_usd:,.4f}")
