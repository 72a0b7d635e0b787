"""Annotate sentences: cache first, then the endpoint, rows written in order, shard by shard.

One pass over ``sentences.parquet`` (streamed in batches). For each sentence the prompt is
rendered and its cache key computed; a cached answer is used as is (no request), an
identical prompt already in flight shares that request, anything else becomes a request
through ``LLMClient`` (created on the first miss, so a fully cached run needs no key and
opens no connection). Rows are written in the input order: finished rows wait in a
bounded window until every earlier row is done, so memory stays bounded however many
sentences there are.

Runs share the cache, and a sentence another live run is asking for is not asked again:
before a request the sentence's lease is taken in the cache (``cache.py``); a sentence
whose lease another run holds waits until that run's answer appears in the cache (or its
lease lapses, and this run asks). So a second run started on the same sentences *joins*
the first, and says so once in the log.

The run ends in one of four ways: complete (every row written), a fatal API error (stop at
once), the budget (in-flight requests finish and are cached, then a StageError says how far
it got and what it spent), or offline answers missing (listed in
``missing-sentences.jsonl``, and a StageError unless ``allow_partial``). A sentence that
failed (no valid answer after its attempts) keeps its row with ``response`` null and
``error`` set, is never cached, and makes the result *incomplete*: more failures than
``max_failed_share`` fail the stage; fewer are published, said so, and asked again by the
next run (which pays only for them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import os
import random
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine, Mapping, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from nuner_core.annotation.accounting import Budget, BudgetExhausted, RunStats, usd
from nuner_core.annotation.cache import CachedAnswer, Holder, KeyMaker, ResponseCache
from nuner_core.annotation.cache_import import ImportStats, import_responses
from nuner_core.annotation.client import Answer, AnswerFailed, FatalAPIError, LLMClient, api_key_from
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.annotation.output import FILE_NAME, ShardedWriter
from nuner_core.annotation.prompt import PromptTemplate, load_template
from nuner_core.annotation.ratelimit import Clock, RateLimiter, RealClock
from nuner_core.stage_api import LogProgress, Progress, StageError

log = logging.getLogger("nuner.annotate")
MISSING_FILE = "missing-sentences.jsonl"
LOOKUP_BATCH = 1_000  # sentences read from parquet and looked up in the cache at a time
PROGRESS_EVERY_S = 0.5  # progress reports at most this often (the Progress throttles its own output further)
LEASE_POLL_S = 0.2  # how often sentences leased by another run are looked up (real time: other processes' time)
T = TypeVar("T")


@dataclass
class AnnotationResult:
    out_path: Path
    total: int
    stats: RunStats
    wall_s: float
    prompt_version: str
    import_stats: ImportStats | None = None
    missing: int = 0
    shards: int = 0
    limiter_wait_s: float = 0.0
    joined: str | None = None  # the other run this one met on the same sentences (and joined), if any

    @property
    def failed(self) -> int:
        """Sentences without an answer in the output: failed requests, and offline misses."""
        return sum(self.stats.failures.values()) + self.missing

    def failed_by_reason(self) -> dict[str, int]:
        reasons = dict(self.stats.failures)
        if self.missing:
            reasons["not_cached"] = self.missing
        return dict(sorted(reasons.items()))

    @property
    def requests_per_s(self) -> float:
        return self.stats.requests / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        out = self.stats.as_dict()
        out.update(
            total=self.total,
            missing_offline=self.missing,
            wall_s=round(self.wall_s, 3),
            requests_per_s=round(self.requests_per_s, 3),
            prompt_version=self.prompt_version,
            shards=self.shards,
            rate_limit_wait_s=round(self.limiter_wait_s, 3),
        )
        if self.joined:
            out["joined_run"] = self.joined
        if self.import_stats is not None:
            out["import"] = self.import_stats.as_dict()
        return out


def run_annotation(
    config: AnnotateConfig,
    sentences: Path,
    out_dir: Path,
    *,
    cache_dir: Path,
    work_dir: Path | None = None,
    progress: Progress | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    environ: Mapping[str, str] | None = None,
) -> AnnotationResult:
    """Annotate ``sentences`` (a parquet file with ``id`` and ``text``) into ``out_dir/responses.parquet``."""
    run = _Annotation(config, sentences, out_dir, cache_dir, work_dir or out_dir, progress, clock, rng, environ)
    return _run_coroutine(run.run())


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from a thread that already runs an event loop (notebooks, some task runners)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass
class _Shared:
    """Outcome of an in-flight request, for identical prompts that wait on it."""

    answer: Answer | None = None
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class _Pending:
    """A sentence waiting for its answer: its row's place and content, and its prompt."""

    index: int
    sid: str
    text: str
    messages: list[dict[str, str]]


class _Annotation:
    def __init__(self, config, sentences, out_dir, cache_dir, work_dir, progress, clock, rng, environ):
        self.config: AnnotateConfig = config
        self.sentences = Path(sentences)
        self.out_path = Path(out_dir) / FILE_NAME
        self.cache_dir = Path(cache_dir)
        self.work_dir = Path(work_dir)
        self.progress: Progress = progress or LogProgress("annotate")
        self.clock: Clock = clock or RealClock()
        self.rng = rng
        self.environ = os.environ if environ is None else environ
        self.stats = RunStats()
        self.budget = Budget(config.max_requests, config.max_cost, config.price(), self.stats)
        self.template: PromptTemplate = load_template(config.prompt_template)
        self.keys = KeyMaker(config.model, config.sampling())
        self.holder = Holder()  # this run, as named in the leases it takes
        self.missing: list[tuple[str, str]] = []
        self.inflight: dict[str, _Shared] = {}  # key -> this run's request for it
        self.leased: set[str] = set()  # keys whose lease this run holds
        self.waiting: dict[str, list[_Pending]] = {}  # key -> sentences waiting for another run's answer
        self.watcher: asyncio.Task | None = None
        self.joined: Holder | None = None  # the first other run met, once met
        self.done: dict[int, dict[str, Any]] = {}
        self.next_flush = 0
        self.completed = 0
        self.total = 0
        self.started = time.monotonic()
        self._last_progress = 0.0
        self.client: LLMClient | None = None
        self.limiter: RateLimiter | None = None

    # -- the run -----------------------------------------------------------------------------
    async def run(self) -> AnnotationResult:
        imported = None
        if self.config.import_responses:
            imported = import_responses(
                self.config.import_responses, model=self.config.model, config=self.config, cache_dir=self.cache_dir
            )
        if not self.sentences.is_file():
            raise StageError(f"annotate: no sentences file at {self.sentences}")
        try:
            parquet = pq.ParquetFile(self.sentences)
        except (OSError, pa.ArrowException) as exc:
            raise self._unreadable(exc) from None
        self.total = parquet.metadata.num_rows
        self.window = asyncio.Semaphore(2 * self.config.shard_size)  # rows finished or in flight, not yet written
        self.tasks = asyncio.Semaphore(2 * self.config.max_in_flight)  # request tasks alive at once
        self.writer = ShardedWriter(self.out_path, self.config.shard_size)
        self.progress.update(0, self.total, f"model {self.config.model}, prompt {self.template.version}")
        try:
            with ResponseCache(self.cache_dir) as cache:
                self.cache = cache
                renewer = asyncio.create_task(self._renew_leases())
                try:
                    async with AsyncExitStack() as stack:
                        self.stack = stack
                        async with asyncio.TaskGroup() as group:
                            self.group = group
                            await self._produce(parquet)
                except* FatalAPIError as group_error:
                    raise StageError(str(group_error.exceptions[0])) from None
                except* StageError as group_error:
                    raise group_error.exceptions[0] from None
                finally:
                    renewer.cancel()
                    for key in list(self.leased):  # a run that stops early lets the others have its sentences at once
                        cache.release(key, self.holder)
            return self._finish_run(imported)
        finally:
            self.writer.close()

    async def _produce(self, parquet: pq.ParquetFile) -> None:
        index = 0
        batches = parquet.iter_batches(batch_size=LOOKUP_BATCH, columns=["id", "text"])
        while True:
            try:
                batch = next(batches, None)
            except (OSError, pa.ArrowException) as exc:
                raise self._unreadable(exc) from None
            if batch is None:
                break
            ids, texts = batch.column("id").to_pylist(), batch.column("text").to_pylist()
            messages = [self.template.messages(text) for text in texts]
            keys = [self.keys.key(m) for m in messages]
            found = self.cache.get_many(keys)
            for sid, text, message, key, cached in zip(ids, texts, messages, keys, found):
                if self.budget.stopped:
                    return
                await self.window.acquire()
                work = self._submit(_Pending(index, sid, text, message), key, cached)
                index += 1
                if work is not None:
                    await self._start(work)
            await asyncio.sleep(0)  # let request tasks run during long stretches of cache hits
        # (the task group waits for the requests still in flight, and for the answers of other runs)

    def _unreadable(self, exc: BaseException) -> StageError:
        return StageError(
            f"annotate: cannot read {self.sentences} ({type(exc).__name__}: {exc}). The file is damaged or incomplete: "
            f"rerun the stage that wrote it (the corpus stage) to rebuild it."
        )

    def _submit(self, item: _Pending, key: str, cached: CachedAnswer | None) -> Callable[[], Awaitable[None]] | None:
        """Finish the row now (cached, or missing offline), or return the work that will (None: it waits)."""
        if cached is not None:
            self._from_cache(item, cached)
            return None
        if self.config.offline:
            self.missing.append((item.sid, item.text))
            self._row_done(item.index, self._row(item.sid, item.text, None, error="not_cached: offline and no cached answer"))
            return None
        if key in self.inflight:
            self.stats.shared += 1
            return functools.partial(self._share, item, self.inflight[key])
        if key in self.waiting:  # another run has it: wait with the others
            self.waiting[key].append(item)
            return None
        other = self.cache.lease(key, self.holder, self.config.lease_s)
        if other is not None:
            self._wait_for(key, item, other)
            return None
        return self._leased(key, [item])

    def _leased(self, key: str, items: list[_Pending]) -> Callable[[], Awaitable[None]] | None:
        """This run holds the lease of ``key``: use an answer written meanwhile, or ask for it."""
        # Looked up again now that no other run can be asking: it may have answered and released
        # the lease between the batch lookup (or the last poll) and the lease.
        cached = self.cache.get(key)
        if cached is not None:
            self.cache.release(key, self.holder)
            for item in items:
                self._from_cache(item, cached)
            return None
        self.leased.add(key)
        shared = self.inflight[key] = _Shared()
        first, *rest = items
        for item in rest:  # identical sentences that waited together share the request
            self.stats.shared += 1
            self.group.create_task(self._share(item, shared))
        return functools.partial(self._request, first, key, shared)

    async def _start(self, work: Callable[[], Awaitable[None]]) -> None:
        await self.tasks.acquire()  # back-pressure: a bounded number of request tasks
        self.group.create_task(self._bounded(work))

    async def _bounded(self, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        finally:
            self.tasks.release()

    async def _request(self, item: _Pending, key: str, shared: _Shared) -> None:
        client = await self._client()
        row: dict[str, Any]
        try:
            answer = await client.complete(item.messages)
        except AnswerFailed as exc:
            self.stats.failures[exc.reason] += 1
            shared.error = f"{exc.reason}: {exc.detail}"
            row = self._row(item.sid, item.text, None, error=shared.error)
        except BudgetExhausted as exc:
            self.stats.not_requested += 1
            shared.error = f"not_requested: budget ({exc})"
            row = self._row(item.sid, item.text, None, error=shared.error)
        else:
            # Written only now: the answer is complete and valid (or accepted as configured);
            # with its lease released in the same transaction, so a waiting run finds it.
            self.cache.put_and_release(key, CachedAnswer(answer.content, answer.prompt_tokens, answer.completion_tokens,
                                                         answer.finish_reason, answer.served_model), self.holder)
            self.stats.answered += 1
            self.stats.accepted_empty += not answer.content.strip()
            self.stats.accepted_truncated += answer.finish_reason == "length"
            shared.answer = answer
            row = self._row(item.sid, item.text, answer.content, answer.prompt_tokens, answer.completion_tokens, False)
        finally:
            if shared.answer is None:
                self.cache.release(key, self.holder)  # failed or stopped: another run may try
            self.leased.discard(key)
            self.inflight.pop(key, None)
            shared.done.set()
        self._row_done(item.index, row)

    async def _share(self, item: _Pending, shared: _Shared) -> None:
        await shared.done.wait()
        if shared.answer is not None:
            row = self._row(item.sid, item.text, shared.answer.content, None, None, True)
        else:
            if not (shared.error or "").startswith("not_requested"):
                self.stats.failures[(shared.error or "failed").split(":")[0]] += 1
            row = self._row(item.sid, item.text, None, error=shared.error)
        self._row_done(item.index, row)

    def _from_cache(self, item: _Pending, cached: CachedAnswer) -> None:
        self.stats.cache_hits += 1
        self.stats.accepted_empty += not cached.response.strip()
        self._row_done(item.index, self._row(item.sid, item.text, cached.response, cached.prompt_tokens,
                                             cached.completion_tokens, True))

    # -- other runs ----------------------------------------------------------------------------
    def _wait_for(self, key: str, item: _Pending, other: Holder) -> None:
        if self.joined is None:
            self.joined = other
            log.warning(
                "annotate: another run is asking for some of these sentences (%s, sharing the cache %s). This run "
                "joins it: it asks only for sentences no run is asking for, and takes the other run's answers from "
                "the cache as they arrive (or asks itself if that run stops).", other.describe(), self.cache_dir,
            )
        self.waiting[key] = [item]
        if self.watcher is None or self.watcher.done():
            self.watcher = self.group.create_task(self._watch())

    async def _watch(self) -> None:
        """Until no sentence waits: take the other runs' answers, and the leases they gave up or let lapse."""
        while self.waiting:
            await asyncio.sleep(LEASE_POLL_S)
            keys = list(self.waiting)
            answers = self.cache.get_many(keys)
            unanswered = []
            for key, cached in zip(keys, answers):
                if cached is None:
                    unanswered.append(key)
                    continue
                for item in self.waiting.pop(key):
                    self.stats.from_other_run += 1
                    self._from_cache(item, cached)
            for key, other in zip(unanswered, self.cache.holders(unanswered)):
                if other is not None or self.cache.lease(key, self.holder, self.config.lease_s) is not None:
                    continue  # still being asked for (or another waiting run was quicker)
                items = self.waiting.pop(key)
                work = self._leased(key, items)
                if work is not None:
                    self.stats.taken_over += 1
                    await self._start(work)

    async def _renew_leases(self) -> None:
        """Keep this run's leases alive while it runs (real time: the leases expire in other processes' time)."""
        while True:
            await asyncio.sleep(self.config.lease_s / 3)
            if self.leased:
                self.cache.renew(list(self.leased), self.holder, self.config.lease_s)

    async def _client(self) -> LLMClient:
        """The client, created on the first cache miss (a fully cached run needs no key)."""
        if self.client is None:
            api_key = api_key_from(self.environ, self.config.api_key_env, "annotate")
            self.limiter = RateLimiter(
                self.config.requests_per_minute, self.config.tokens_per_minute, self.config.max_in_flight, self.clock
            )
            client = LLMClient(
                self.config, api_key=api_key, limiter=self.limiter, budget=self.budget, stats=self.stats,
                clock=self.clock, rng=self.rng,
            )
            self.client = await self.stack.enter_async_context(client)
            log.info("annotate: requesting %s at %s", self.config.model, client.url)
        return self.client

    # -- rows, in order ----------------------------------------------------------------------
    def _row(self, sid, text, response, prompt_tokens=None, completion_tokens=None, from_cache=False, error=None) -> dict[str, Any]:
        return {
            "id": sid,
            "text": text,
            "response": response,
            "model": self.config.model,
            "prompt_version": self.template.version,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "from_cache": from_cache,
            "error": error,
        }

    def _row_done(self, index: int, row: dict[str, Any]) -> None:
        self.done[index] = row
        while self.next_flush in self.done:
            self.writer.add(self.done.pop(self.next_flush))
            self.next_flush += 1
            self.window.release()
        self.completed += 1
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY_S or self.completed == self.total:
            self._last_progress = now
            self.progress.update(self.completed, self.total, self._note())

    def _note(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.completed / elapsed
        eta = (self.total - self.completed) / rate if rate > 0 else float("inf")
        s = self.stats
        failed = sum(s.failures.values())
        return (
            f"{rate:,.1f} sentences/s, {s.requests / elapsed:,.2f} requests/s, ETA {_duration(eta)}; "
            f"{s.cache_hits:,} cached, {s.requests:,} requests, {sum(s.retries.values()):,} retries, {failed:,} failed; "
            f"{s.prompt_tokens + s.completion_tokens:,} tokens, ${s.cost_usd:,.4f}"
        )

    # -- the end -----------------------------------------------------------------------------
    def _finish_run(self, imported: ImportStats | None) -> AnnotationResult:
        wall = time.monotonic() - self.started
        self.stats.sentences = self.completed
        s = self.stats
        answered = s.cache_hits + s.answered + s.shared
        if self.budget.stopped:
            raise StageError(
                f"annotation stopped by the budget: {self.budget.stopped}. {answered:,} of {self.total:,} sentences have "
                f"an answer in the cache ({s.cache_hits:,} were cached before this run or answered by another run, "
                f"{s.answered:,} answered now); this run spent {usd(s.cost_usd)} in {s.requests:,} requests. Nothing "
                f"was published; rerun with a higher annotate.max_cost / annotate.max_requests to continue from the cache."
            )
        if self.missing:
            missing_path = self._write_missing()
            examples = "; ".join(f"{sid}: {text[:60]!r}" for sid, text in self.missing[:5])
            message = (
                f"offline: {len(self.missing):,} of {self.total:,} sentences have no cached answer for model "
                f"{self.config.model!r} and prompt {self.template.version} (e.g. {examples}); all are listed in {missing_path}. "
                f"Import recorded answers (nuner cache import FILE.jsonl --model {self.config.model}), run online "
                f"(annotate.offline=false), or set annotate.allow_partial=true."
            )
            if not self.config.allow_partial:
                raise StageError(message)
            log.warning("%s", message)
        failed = sum(s.failures.values())
        if failed > self.config.max_failed_share * self.total:
            raise StageError(
                f"annotation: {failed:,} of {self.total:,} sentences failed ({dict(s.failures)}), more than "
                f"annotate.max_failed_share={self.config.max_failed_share:g}. Their answers were not cached, so a rerun "
                f"asks for them again; {answered:,} answers are cached."
            )
        if failed:
            log.warning(
                "annotate: %s of %s sentences failed (%s). They are written as failed (response null, the reason in "
                "'error'), not as answers: the dataset stage leaves them out, and the artifact is marked incomplete, "
                "so the next run of the annotate stage asks for exactly these again.",
                f"{failed:,}", f"{self.total:,}", ", ".join(f"{k}: {v:,}" for k, v in sorted(s.failures.items())),
            )
        self.writer.close()
        if self.total == 0:
            self.progress.update(0, 0, "no sentence")
        return AnnotationResult(
            out_path=self.out_path,
            total=self.total,
            stats=self.stats,
            wall_s=wall,
            prompt_version=self.template.version,
            import_stats=imported,
            missing=len(self.missing),
            shards=self.writer.shards,
            limiter_wait_s=self.limiter.waited_s if self.limiter else 0.0,
            joined=self.joined.describe() if self.joined else None,
        )

    def _write_missing(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path = self.work_dir / MISSING_FILE
        with path.open("w", encoding="utf-8") as fh:
            for sid, text in self.missing:
                fh.write(json.dumps({"id": sid, "text": text}, ensure_ascii=False) + "\n")
        return path


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
