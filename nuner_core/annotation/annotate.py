"""Annotate sentences: cache first, then the endpoint, rows written in order, shard by shard.

One pass over ``sentences.parquet`` (streamed in batches). For each sentence the prompt is
rendered and its cache key computed; the cache is looked up a batch at a time, and what it
has no answer for goes through the one request path (``asking.py``): an identical prompt
already in flight shares that request, anything else becomes a request through
``LLMClient`` (created on the first miss, so a fully cached run needs no key and opens no
connection). Rows are written in the input order: finished rows wait in a bounded window
until every earlier row is done, so memory stays bounded however many sentences there are.

Runs share the cache, and a sentence another live run is asking for is not asked again:
before a request the sentence's lease is taken in the cache (``asking.py``, ``cache.py``);
a sentence whose lease another run holds waits until that run's answer appears in the
cache (or its lease lapses, and this run asks). So a second run started on the same
sentences *joins* the first, and says so once in the log.

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
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from nuner_core.annotation.accounting import usd
from nuner_core.annotation.asking import Asker, Outcome, run_coroutine
from nuner_core.annotation.cache_import import ImportStats, import_responses
from nuner_core.annotation.client import FatalAPIError
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.annotation.output import FILE_NAME, ShardedWriter
from nuner_core.annotation.prompt import PromptTemplate, load_template
from nuner_core.annotation.ratelimit import Clock
from nuner_core.annotation.result import AnnotationResult
from nuner_core.stage_api import LogProgress, Progress, StageError

__all__ = ["AnnotationResult", "MISSING_FILE", "run_annotation"]

log = logging.getLogger("nuner.annotate")
MISSING_FILE = "missing-sentences.jsonl"
LOOKUP_BATCH = 1_000  # sentences read from parquet and looked up in the cache at a time
PROGRESS_EVERY_S = 0.5  # progress reports at most this often (the Progress throttles its own output further)


def run_annotation(
    config: AnnotateConfig,
    sentences: Path,
    out_dir: Path,
    *,
    cache_dir: Path,
    work_dir: Path | None = None,
    progress: Progress | None = None,
    clock: Clock | None = None,
    lease_clock: Clock | None = None,
    rng: random.Random | None = None,
    environ: Mapping[str, str] | None = None,
) -> AnnotationResult:
    """Annotate ``sentences`` (a parquet file with ``id`` and ``text``) into ``out_dir/responses.parquet``.

    ``clock`` paces the requests (rate limits, backoff); ``lease_clock`` gives the leases' times (``asking.py``).
    """
    asker = Asker(config, Path(cache_dir), field="annotate", environ=os.environ if environ is None else environ,
                  clock=clock, lease_clock=lease_clock, rng=rng)
    run = _Annotation(config, Path(sentences), Path(out_dir), Path(work_dir or out_dir), progress or LogProgress("annotate"),
                      asker)
    return run_coroutine(run.run())


class _Annotation:
    def __init__(self, config: AnnotateConfig, sentences: Path, out_dir: Path, work_dir: Path, progress: Progress,
                 asker: Asker) -> None:
        self.config = config
        self.sentences = sentences
        self.out_path = out_dir / FILE_NAME
        self.work_dir = work_dir
        self.progress = progress
        self.asker = asker
        self.stats = asker.stats
        self.template: PromptTemplate = load_template(config.prompt_template)
        self.writer = ShardedWriter(self.out_path, config.shard_size)
        self.window = asyncio.Semaphore(2 * config.shard_size)  # rows finished or in flight, not yet written
        self.slots = asyncio.Semaphore(2 * config.max_in_flight)  # sentences making their own request at once
        self.missing: list[tuple[str, str]] = []  # (id, text) of the sentences offline without a cached answer
        self.done: dict[int, dict[str, Any]] = {}  # finished rows waiting for an earlier one
        self.next_flush = 0
        self.completed = 0
        self.total = 0
        self.started = time.monotonic()
        self.last_progress = 0.0

    # -- the run -----------------------------------------------------------------------------
    async def run(self) -> AnnotationResult:
        imported = None
        if self.config.import_responses:
            imported = import_responses(
                self.config.import_responses, model=self.config.model, config=self.config, cache_dir=self.asker.cache_dir
            )
        if not self.sentences.is_file():
            raise StageError(f"annotate: no sentences file at {self.sentences}")
        try:
            parquet = pq.ParquetFile(self.sentences)
        except (OSError, pa.ArrowException) as exc:
            raise self._unreadable(exc) from None
        self.total = parquet.metadata.num_rows
        self.progress.update(0, self.total, f"model {self.config.model}, prompt {self.template.version}")
        try:
            try:
                async with self.asker, asyncio.TaskGroup() as group:
                    await self._produce(parquet, group)
            except* FatalAPIError as group_error:
                raise StageError(str(group_error.exceptions[0])) from None
            except* StageError as group_error:
                raise group_error.exceptions[0] from None
            return self._finish_run(imported)
        finally:
            self.writer.close()

    async def _produce(self, parquet: pq.ParquetFile, group: asyncio.TaskGroup) -> None:
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
            keys = [self.asker.keys.key(m) for m in messages]
            for sid, text, message, key, cached in zip(ids, texts, messages, keys, self.asker.lookup(keys)):
                if self.asker.budget.stopped:
                    return
                await self.window.acquire()
                outcome = self.asker.settle_now(cached)
                if outcome is not None:
                    self._row_done(index, sid, text, outcome)
                else:
                    await self.slots.acquire()  # back-pressure: a bounded number of sentences asking
                    group.create_task(self._answer(index, sid, text, key, message))
                index += 1
            await asyncio.sleep(0)  # let request tasks run during long stretches of cache hits
        # (the task group waits for the requests still in flight, and for the answers of other runs)

    async def _answer(self, index: int, sid: str, text: str, key: str, messages: list[dict[str, str]]) -> None:
        self._row_done(index, sid, text, await self.asker.answer(key, messages, self.slots))

    def _unreadable(self, exc: BaseException) -> StageError:
        return StageError(
            f"annotate: cannot read {self.sentences} ({type(exc).__name__}: {exc}). The file is damaged or incomplete: "
            f"rerun the stage that wrote it (the corpus stage) to rebuild it."
        )

    # -- rows, in order ----------------------------------------------------------------------
    def _row_done(self, index: int, sid: str, text: str, outcome: Outcome) -> None:
        if outcome.reason == "not_cached":
            self.missing.append((sid, text))
        self.done[index] = {
            "id": sid,
            "text": text,
            "response": outcome.content,
            "model": self.config.model,
            "prompt_version": self.template.version,
            "prompt_tokens": outcome.prompt_tokens,
            "completion_tokens": outcome.completion_tokens,
            "from_cache": outcome.from_cache,
            "error": outcome.error,
        }
        while self.next_flush in self.done:
            self.writer.add(self.done.pop(self.next_flush))
            self.next_flush += 1
            self.window.release()
        self.completed += 1
        now = time.monotonic()
        if now - self.last_progress >= PROGRESS_EVERY_S or self.completed == self.total:
            self.last_progress = now
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
        if self.asker.budget.stopped:
            raise StageError(
                f"annotation stopped by the budget: {self.asker.budget.stopped}. {answered:,} of {self.total:,} sentences "
                f"have an answer in the cache ({s.cache_hits:,} were cached before this run or answered by another run, "
                f"{s.answered:,} answered now); this run spent {usd(s.cost_usd)} in {s.requests:,} requests. "
                f"{self.asker.budget.per_run('annotate')}; {self.asker.budget.spent_so_far()}. Nothing was published."
            )
        if self.missing:
            self._missing_answers()
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
            limiter_wait_s=self.asker.limiter_wait_s,
            joined=self.asker.joined.describe() if self.asker.joined else None,
        )

    def _missing_answers(self) -> None:
        """Offline without some answers: list them in a file, then fail (or warn, with ``allow_partial``)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path = self.work_dir / MISSING_FILE
        with path.open("w", encoding="utf-8") as fh:
            for sid, text in self.missing:
                fh.write(json.dumps({"id": sid, "text": text}, ensure_ascii=False) + "\n")
        examples = "; ".join(f"{sid}: {text[:60]!r}" for sid, text in self.missing[:5])
        message = (
            f"offline: {len(self.missing):,} of {self.total:,} sentences have no cached answer for model "
            f"{self.config.model!r} and prompt {self.template.version} (e.g. {examples}); all are listed in {path}. "
            f"Import recorded answers (nuner cache import FILE.jsonl --model {self.config.model}), run online "
            f"(annotate.offline=false), or set annotate.allow_partial=true."
        )
        if not self.config.allow_partial:
            raise StageError(message)
        log.warning("%s", message)


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
