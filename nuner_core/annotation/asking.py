"""Asking an LLM, prompt by prompt: the one request path of the annotate stage and of the evaluation's LLMs.

An :class:`Asker` (used as ``async with``) turns each prompt into one :class:`Outcome`:

- **cache first**: the caller looks its prompts up in the response cache (``cache.py``,
  keyed on model + messages + sampling) in batches; :meth:`Asker.settle_now` gives the
  outcome of a hit (or, offline, of a miss) without a request;
- **one request per distinct prompt**: a prompt identical to one this run is asking for
  already waits for that request's answer (``shared``);
- **leases**: before asking, the run takes the prompt's lease in the cache; a prompt that
  another live run holds is waited for, and its answer taken from the cache when it arrives
  (``from_other_run``), or asked here once that run gives the lease up or lets it lapse
  (``taken_over``). All waits share one poll of the cache;
- **the client** (``client.py``), created on the first prompt that needs a request (a fully
  cached run needs no key and opens no connection): retries, the rate limiter, the budget;
- **store**: an answer is written to the cache as soon as it arrived complete and valid,
  with its lease released in the same transaction, so a waiting run finds it and a killed
  run loses nothing but the requests in flight; a failed prompt is never cached;
- **stats**: every outcome is counted in one :class:`RunStats`.

A caller that starts one task per prompt bounds them with a semaphore it passes along
(``slot``): a prompt that waits for another's request gives its slot back at once, so
waiting never holds up the prompts this run can ask for itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import random
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Coroutine, Literal, Mapping, Sequence, TypeVar

from nuner_core.annotation.accounting import Budget, BudgetExhausted, RunStats
from nuner_core.annotation.cache import CachedAnswer, KeyMaker, ResponseCache
from nuner_core.annotation.client import AnswerFailed, LLMClient, api_key_from
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.annotation.leases import Holder, WallClock
from nuner_core.annotation.ratelimit import Clock, RateLimiter, RealClock

log = logging.getLogger("nuner.llm")
LEASE_POLL_S = 0.2  # how often prompts leased by another run are looked up (in the lease clock's time)
NOT_CACHED = "not_cached: offline and no cached answer"
NEVER_REACHED = "not_requested: never reached"
T = TypeVar("T")

Messages = Sequence[Mapping[str, str]]
Source = Literal["request", "cache", "other_run", "none"]


@dataclass(frozen=True)
class Outcome:
    """What became of one prompt."""

    content: str | None  # the answer text; None: no answer (``error`` says why)
    from_cache: bool = False  # answered before this request (the cache, another run, or an identical prompt's request)
    prompt_tokens: int | None = None  # as the endpoint reported them when the answer was made (None: not reported)
    completion_tokens: int | None = None
    finish_reason: str | None = None  # "stop", "length" (a truncated answer that was accepted), ...
    error: str | None = None  # "<reason>: <detail>"; reasons: a client failure reason, not_requested, not_cached

    @property
    def reason(self) -> str | None:
        return None if self.error is None else self.error.split(":", 1)[0]


@dataclass(frozen=True)
class _Settled:
    """A prompt's outcome and where its answer came from (how the identical prompts that waited on it are counted)."""

    outcome: Outcome
    source: Source


class _Slot:
    """One unit of the caller's semaphore, given back once: when the prompt starts waiting, or when it is done."""

    def __init__(self, semaphore: asyncio.Semaphore | None) -> None:
        self.semaphore = semaphore

    def give_back(self) -> None:
        if self.semaphore is not None:
            self.semaphore.release()
            self.semaphore = None


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from a thread that already runs an event loop (notebooks, some task runners)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Asker:
    """The prompts of one run of one LLM config; see the module docstring.

    ``field`` is the config path of ``config`` (``annotate``, ``evaluate.llms[gpt]``): messages
    name its fields. ``clock`` paces the client (rate limits, backoff); ``lease_clock`` gives
    the leases' times and the waits for other runs' answers (wall-clock time by default).
    """

    def __init__(
        self,
        config: AnnotateConfig,
        cache_dir: Path,
        *,
        field: str,
        environ: Mapping[str, str],
        clock: Clock | None = None,
        lease_clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.cache_dir = cache_dir
        self.field = field
        self.environ = environ
        self.clock: Clock = clock or RealClock()
        self.lease_clock: Clock = lease_clock or WallClock()
        self.rng = rng
        self.stats = RunStats()
        self.budget = Budget(config.max_requests, config.max_cost, config.price(), self.stats)
        self.keys = KeyMaker(config.model, config.sampling())
        self.holder = Holder()  # this run, as named in the leases it takes
        self.joined: Holder | None = None  # the first other run met, once met
        self.setup_s = 0.0  # seconds spent creating the client (imports, connection pool), once per run
        self.client: LLMClient | None = None
        self.limiter: RateLimiter | None = None
        self._cache: ResponseCache | None = None
        self._held: set[str] = set()  # keys whose lease this run holds
        self._inflight: dict[str, asyncio.Future[_Settled]] = {}  # key -> the outcome of this run's prompt for it
        self._waiting: dict[str, asyncio.Future[CachedAnswer | None]] = {}  # key -> another run's answer (None: leased here)
        self._watcher: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._stack = AsyncExitStack()

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> "Asker":
        self._cache = ResponseCache(self.cache_dir, clock=self.lease_clock.now)
        self._renewer = asyncio.create_task(self._renew_leases())
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            for task in (self._renewer, self._watcher):
                if task is not None:
                    task.cancel()
            for key in list(self._held):  # a run that stops early lets the others have its prompts at once
                self.cache.release(key, self.holder)
            self._held.clear()
            await self._stack.aclose()
        finally:
            self.cache.close()
            self._cache = None

    @property
    def cache(self) -> ResponseCache:
        if self._cache is None:
            raise RuntimeError("use the Asker inside `async with`")
        return self._cache

    @property
    def limiter_wait_s(self) -> float:
        """Time spent waiting for the rate limiter."""
        return self.limiter.waited_s if self.limiter else 0.0

    # -- prompts ---------------------------------------------------------------------------
    def lookup(self, keys: Sequence[str]) -> list[CachedAnswer | None]:
        """The cached answers of ``keys``, in one transaction."""
        return self.cache.get_many(keys)

    def settle_now(self, cached: CachedAnswer | None) -> Outcome | None:
        """The outcome that needs no request: a cached answer, or offline's miss; None: :meth:`answer` it."""
        if cached is not None:
            return self._hit(cached, "cache").outcome
        if self.config.offline:
            return Outcome(None, error=NOT_CACHED)
        return None

    async def answer(self, key: str, messages: Messages, slot: asyncio.Semaphore | None = None) -> Outcome:
        """The outcome of a prompt the cache had no answer for (``key`` from :attr:`keys`).

        ``slot``: a semaphore the caller acquired for this prompt; released when the prompt starts
        waiting for another's request, or when it is done.
        """
        held = _Slot(slot)
        try:
            if self.config.offline:
                return Outcome(None, error=NOT_CACHED)
            leader = self._inflight.get(key)
            if leader is not None:  # an identical prompt is being asked for: its answer is this one's
                held.give_back()
                return self._follow(await asyncio.shield(leader))
            if self.budget.stopped:
                self.stats.not_requested += 1
                return Outcome(None, error=f"not_requested: budget ({self.budget.stopped})")
            future = self._inflight[key] = asyncio.get_running_loop().create_future()
            settled = _Settled(Outcome(None, error=NEVER_REACHED), "none")
            try:
                settled = await self._lead(key, messages, held)
            finally:
                del self._inflight[key]
                future.set_result(settled)
            return settled.outcome
        finally:
            held.give_back()

    async def _lead(self, key: str, messages: Messages, held: _Slot) -> _Settled:
        """Take the prompt's lease (waiting while another live run holds it), then use its answer or ask for it."""
        other = self._take(key)
        if other is None:
            return await self._ask(key, messages, taken_over=False)
        if self.joined is None:
            self.joined = other
            log.warning(
                "%s: another run is asking for some of the same prompts (%s, sharing the cache %s). This run joins it: "
                "it asks only for prompts no run is asking for, and takes the other run's answers from the cache as "
                "they arrive (or asks itself if that run stops).", self.field, other.describe(), self.cache_dir,
            )
        held.give_back()
        cached = await self._wait_for_other_run(key)
        if cached is not None:
            return self._hit(cached, "other_run")
        return await self._ask(key, messages, taken_over=True)

    async def _ask(self, key: str, messages: Messages, *, taken_over: bool) -> _Settled:
        """Ask for a prompt whose lease this run holds; store a valid answer, count the outcome."""
        stored = False
        try:
            # Looked up again now that no other run can be asking: it may have answered and released
            # the lease between the batch lookup (or the last poll) and the lease.
            cached = self.cache.get(key)
            if cached is not None:
                return self._hit(cached, "cache")
            self.stats.taken_over += taken_over
            client = await self._client()
            try:
                answer = await client.complete(messages)
            except AnswerFailed as exc:
                self.stats.failures[exc.reason] += 1
                return _Settled(Outcome(None, error=f"{exc.reason}: {exc.detail}"), "none")
            except BudgetExhausted as exc:
                self.stats.not_requested += 1
                return _Settled(Outcome(None, error=f"not_requested: budget ({exc})"), "none")
            # Written only now: the answer is complete and valid (or accepted as configured);
            # with its lease released in the same transaction, so a waiting run finds it.
            self.cache.put_and_release(key, CachedAnswer(answer.content, answer.prompt_tokens, answer.completion_tokens,
                                                         answer.finish_reason, answer.served_model), self.holder)
            stored = True
            self.stats.answered += 1
            self.stats.accepted_empty += not answer.content.strip()
            self.stats.accepted_truncated += answer.finish_reason == "length"
            return _Settled(Outcome(answer.content, False, answer.prompt_tokens, answer.completion_tokens,
                                    answer.finish_reason), "request")
        finally:
            if not stored:
                self.cache.release(key, self.holder)  # failed, stopped, or found cached: another run may try
            self._held.discard(key)

    def _hit(self, cached: CachedAnswer, source: Source, *, paid: bool = True) -> _Settled:
        """An answer read from the cache: written before this run, or by another run while this one waited.

        ``paid``: its cost counts in ``cached_cost_usd`` (not for an identical prompt's second use of it).
        """
        self.stats.cache_hits += 1
        self.stats.accepted_empty += not cached.response.strip()
        self.stats.from_other_run += source == "other_run"
        if paid and cached.prompt_tokens is not None and cached.completion_tokens is not None:
            self.stats.cached_cost_usd += self.budget.cost(cached.prompt_tokens, cached.completion_tokens)
        outcome = Outcome(cached.response, True, cached.prompt_tokens, cached.completion_tokens, cached.finish_reason)
        return _Settled(outcome, source)

    def _follow(self, settled: _Settled) -> Outcome:
        """The outcome of a prompt identical to one this run asked for, counted as its leader's was."""
        outcome = settled.outcome
        if outcome.content is None:
            if outcome.reason == "not_requested":
                self.stats.not_requested += 1
            else:
                self.stats.failures[outcome.reason or "failed"] += 1
            return outcome
        if settled.source == "request":
            self.stats.shared += 1
            return dataclasses.replace(outcome, from_cache=True)
        return self._hit(CachedAnswer(outcome.content, outcome.prompt_tokens, outcome.completion_tokens,
                                      outcome.finish_reason), settled.source, paid=False).outcome

    # -- leases and other runs ---------------------------------------------------------------
    def _take(self, key: str) -> Holder | None:
        """Take ``key``'s lease: None when this run has it now, else the live run that holds it."""
        other = self.cache.lease(key, self.holder, self.config.lease_s)
        if other is None:
            self._held.add(key)
        return other

    async def _wait_for_other_run(self, key: str) -> CachedAnswer | None:
        """The other run's answer for ``key``, or None once this run holds the lease (that run stopped)."""
        future: asyncio.Future[CachedAnswer | None] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch())
        return await future

    async def _watch(self) -> None:
        """Until no prompt waits: take the other runs' answers, and the leases they gave up or let lapse."""
        try:
            while self._waiting:
                await self.lease_clock.sleep(LEASE_POLL_S)
                for key in [k for k, f in self._waiting.items() if f.done()]:  # its prompt was cancelled
                    del self._waiting[key]
                keys = list(self._waiting)
                unanswered = []
                for key, cached in zip(keys, self.cache.get_many(keys)):
                    if cached is None:
                        unanswered.append(key)
                    else:
                        self._waiting.pop(key).set_result(cached)
                for key, other in zip(unanswered, self.cache.holders(unanswered)):
                    if other is None and self._take(key) is None:  # (else still asked for, or another waiting run was quicker)
                        self._waiting.pop(key).set_result(None)
        except Exception as exc:  # the waiting prompts raise it: their run stops
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(exc)
            self._waiting.clear()

    async def _renew_leases(self) -> None:
        """Keep this run's leases alive while it runs (paced in real time: they expire in other processes' time too)."""
        while True:
            await asyncio.sleep(self.config.lease_s / 3)
            if self._held:
                self.cache.renew(list(self._held), self.holder, self.config.lease_s)

    async def _client(self) -> LLMClient:
        """The client, created on the first prompt that needs a request (a fully cached run needs no key)."""
        if self.client is None:
            started = time.monotonic()
            api_key = api_key_from(self.environ, self.config.api_key_env, self.field)
            self.limiter = RateLimiter(self.config.requests_per_minute, self.config.tokens_per_minute,
                                       self.config.max_in_flight, self.clock)
            client = LLMClient(self.config, field=self.field, api_key=api_key, limiter=self.limiter, budget=self.budget,
                               stats=self.stats, clock=self.clock, rng=self.rng)
            self.client = await self._stack.enter_async_context(client)
            self.setup_s += time.monotonic() - started
            log.info("%s: requesting %s at %s", self.field, self.config.model, client.url)
        return self.client
