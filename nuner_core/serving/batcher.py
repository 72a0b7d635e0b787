"""Dynamic batching: concurrent requests merged into one tagger call, run off the event loop in one worker thread.

A request becomes a ``Job`` (its model, its texts, its options). The loop takes the oldest job,
waits at most ``max_wait_s`` for more (or until the queued texts reach ``max_batch_tokens``,
estimated at 4 characters a token), then runs the jobs it took. The wait counts from the later
of the oldest job's arrival and the end of the previous call, so that clients answered by that
call join if they are back within it (closed-loop clients slower than that settle into two
alternating halves; waiting for them would idle the worker about as long as one merged call
saves: README, "Under load"). Then: jobs of the same model and the
same options (labels, thresholds, decoding) go through **one** ``predict`` call, the very call
``nuner tag`` makes, their texts concatenated; the tagger batches those texts by its own token
budget. Answers are cut back per job by position, so one request's texts never reach
another's answer. While the worker thread runs a batch, new jobs queue up and form the next.

One worker thread per process (one model instance each; ``--workers N`` for more processes): the
encoder already uses every core it is given, so two batches at once would only compete.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from nuner_core.serving.models import ServedModel

CHARS_PER_TOKEN = 4  # the token estimate of a queued text (tokenising twice would cost more than it saves)


@dataclass(frozen=True)
class ZeroShotOptions:
    """What must match for two requests to share one ``predict`` call."""

    labels: tuple[str, ...]
    threshold: float
    thresholds: tuple[tuple[str, float], ...] = ()
    decoding: str | None = None  # None: the tagger's default, as `nuner tag` without --decoding


@dataclass
class Job:
    model: ServedModel
    options: Hashable  # ZeroShotOptions, or None for a token classifier
    texts: list[str]
    future: asyncio.Future[list[list[dict[str, Any]]]]
    queued_at: float = field(default_factory=time.perf_counter)

    @property
    def tokens(self) -> int:
        return sum(len(t) // CHARS_PER_TOKEN + 2 for t in self.texts)


def infer(model: ServedModel, options: Hashable, texts: list[str]) -> list[list[dict[str, Any]]]:
    """Entities of each text (as dictionaries): the zero-shot tagger's ``predict`` or the classifier's ``tag``."""
    if model.kind == "token_classifier":
        result: list[list[dict[str, Any]]] = model.predictor.tag(texts)
        return result
    assert isinstance(options, ZeroShotOptions)
    decoding = {} if options.decoding is None else {"decoding": options.decoding}
    entities = model.predictor.predict(texts, list(options.labels), options.threshold, thresholds=dict(options.thresholds) or None, **decoding)
    return [[e.as_dict() for e in row] for row in entities]


BatchHook = Callable[[int, int], None]  # (texts, requests) of each tagger call


class Batcher:
    """The queue, the loop and the worker thread; ``start`` and ``stop`` inside the app's lifespan."""

    def __init__(self, max_batch_tokens: int = 8192, max_wait_s: float = 0.005, on_batch: BatchHook | None = None) -> None:
        if max_batch_tokens < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch_tokens must be positive and max_wait_s not negative, not {max_batch_tokens}, {max_wait_s}")
        self.max_batch_tokens, self.max_wait_s = max_batch_tokens, max_wait_s
        self.on_batch = on_batch
        self.queue: deque[Job] = deque()
        self.calls = 0  # tagger calls made (each serves one or more requests)
        self.requests = 0  # requests answered through them
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._executor: ThreadPoolExecutor | None = None
        self._idle_since = 0.0  # when the worker thread last finished a call

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nuner-serve-infer")
        self._task = asyncio.create_task(self._loop(), name="nuner-serve-batcher")

    async def stop(self) -> None:
        """Answer every queued job, then stop the loop and the worker thread."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def submit(self, model: ServedModel, options: Hashable, texts: list[str]) -> asyncio.Future[list[list[dict[str, Any]]]]:
        """Queue a request; the future holds its entities (per text, in order)."""
        if self._wake is None or self._closing:
            raise RuntimeError("the batcher is not running")
        future: asyncio.Future[list[list[dict[str, Any]]]] = asyncio.get_running_loop().create_future()
        self.queue.append(Job(model, options, list(texts), future))
        self._wake.set()
        return future

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            self._drop_abandoned()
            if not self.queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._gather()
            for group in _groups(self._take()):
                await self._run(group)
            self._idle_since = time.perf_counter()

    async def _gather(self) -> None:
        """Wait for more jobs until the token budget is full or max_wait_s has passed (see the module docstring)."""
        assert self._wake is not None
        deadline = max(self.queue[0].queued_at, self._idle_since) + self.max_wait_s
        while not self._closing and sum(job.tokens for job in self.queue) < self.max_batch_tokens:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _drop_abandoned(self) -> None:
        """Jobs whose client gave up (timed out, disconnected) are not run."""
        if any(job.future.done() for job in self.queue):
            self.queue = deque(job for job in self.queue if not job.future.done())

    def _take(self) -> list[Job]:
        """The oldest jobs up to the token budget (at least one)."""
        taken: list[Job] = []
        tokens = 0
        while self.queue:
            job = self.queue[0]
            if taken and tokens + job.tokens > self.max_batch_tokens:
                break
            self.queue.popleft()
            if not job.future.done():
                taken.append(job)
                tokens += job.tokens
        return taken

    async def _run(self, jobs: list[Job]) -> None:
        """One tagger call for the group; answers cut back per job. A failing call is retried job by job,
        so that one request's failure is its own."""
        loop = asyncio.get_running_loop()
        texts = [text for job in jobs for text in job.texts]
        try:
            results = await loop.run_in_executor(self._executor, infer, jobs[0].model, jobs[0].options, texts)
        except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
            if len(jobs) > 1:
                for job in jobs:
                    await self._run([job])
                return
            _settle(jobs[0].future, exc=exc)
            return
        self.calls += 1
        self.requests += len(jobs)
        if self.on_batch is not None:
            self.on_batch(len(texts), len(jobs))
        start = 0
        for job in jobs:
            _settle(job.future, result=results[start : start + len(job.texts)])
            start += len(job.texts)


def _groups(jobs: list[Job]) -> list[list[Job]]:
    """Jobs that can share a call (same model, same options), in the order of their oldest job."""
    groups: dict[tuple[str, Hashable], list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.model.name, job.options), []).append(job)
    return list(groups.values())


def _settle(future: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None) -> None:
    if future.done():  # the client gave up meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
