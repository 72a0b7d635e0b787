"""The response cache beyond this worker: answers saved as segment files and imported elsewhere.

The response cache (``cache.py``) is a SQLite directory on the worker that annotates, and it
stays there: SQLite over a network file system or an object store is not safe. Its answers
travel as **segments**: Parquet files of ``key`` (the exact cache key) and ``value`` (the
answer's JSON, as cached), which any worker imports without knowing the model, prompt and
sampling that made the keys.

- While the annotate stage runs, ``AnswerJournal`` writes the answers added since its last
  segment to ``<work_dir>/responses/segment-<run>-<n>.parquet`` every ``every_s`` seconds,
  and once more when the stage stops, however it stops. With the store on object storage
  the work directory is pushed to the store at checkpoints (``nuner_core.store.sync``), so a
  stage killed on one worker resumes on another without paying for those answers again;
  on entry the journal imports the segments it finds (pulled from the store).
- A stage that finished saves the answers of its sentences with the artifact
  (``response-cache.parquet``, ``save_answers``): importable on any worker
  (``import_segment``, ``nuner cache import --artifact <key>``), e.g. one that re-annotates
  the same sentences under another key.

Importing never replaces an answer already cached (the same rule as ``nuner cache import``),
and a segment imported before (same name and size: a marker in the cache) is skipped.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from nuner_core.annotation.cache import KEY_VERSION, CachedAnswer, KeyMaker, ResponseCache
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.annotation.prompt import load_template
from nuner_core.stage_api import StageError
from nuner_core.store.sync import sync_interval

log = logging.getLogger("nuner.annotate")

SEGMENTS = "responses"  # the journal's directory inside the stage's work directory
ARTIFACT_FILE = "response-cache.parquet"  # the answers saved with an annotate artifact
SCHEMA = pa.schema([("key", pa.string()), ("value", pa.string())])
BATCH = 5_000  # entries per SQLite transaction or Parquet batch


@dataclass
class SegmentStats:
    segments: int = 0  # files imported
    skipped: int = 0  # files imported before
    entries: int = 0
    added: int = 0
    already_cached: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def write_segment(path: Path, entries: Iterable[tuple[str, str]]) -> int:
    """Write ``(key, value JSON)`` pairs as a segment, atomically (``.part`` renamed); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    count = 0
    with pq.ParquetWriter(part, SCHEMA, compression="zstd") as writer:
        for chunk in _chunks(entries, BATCH):
            keys, values = zip(*chunk)
            writer.write_table(pa.table({"key": list(keys), "value": list(values)}, schema=SCHEMA))
            count += len(chunk)
    os.replace(part, path)
    return count


def import_segment(cache: ResponseCache, path: Path, stats: SegmentStats | None = None) -> SegmentStats:
    """Add a segment's answers to ``cache`` (never replacing one); a file imported before is skipped."""
    stats = stats or SegmentStats()
    marker = f"segment:{path.name}:{path.stat().st_size}"
    if cache.has_marker(marker):
        stats.skipped += 1
        return stats
    try:
        table = pq.read_table(path, schema=SCHEMA)
    except (OSError, pa.ArrowException) as exc:
        raise StageError(f"cannot import the response segment {path} ({type(exc).__name__}: {exc}); delete it to go on") from None
    keys, values = table.column("key").to_pylist(), table.column("value").to_pylist()
    for start in range(0, len(keys), BATCH):
        with cache.transact():
            for key, value in zip(keys[start:start + BATCH], values[start:start + BATCH]):
                stats.entries += 1
                if not key or not str(key).startswith(f"{KEY_VERSION}:") or value is None:
                    raise StageError(f"{path}: row {start} is not a response-cache entry (key {str(key)[:40]!r})")
                if key in cache:
                    stats.already_cached += 1
                    continue
                cache.put(key, CachedAnswer.from_json(value))
                stats.added += 1
    cache.set_marker(marker, {"file": str(path), "entries": len(keys)})
    stats.segments += 1
    return stats


def import_segments(cache_dir: Path, directory: Path) -> SegmentStats:
    """Import every segment in ``directory`` (in name order) into the cache at ``cache_dir``."""
    stats = SegmentStats()
    files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    if not files:
        return stats
    with ResponseCache(cache_dir) as cache:
        for path in files:
            import_segment(cache, path, stats)
    if stats.added:
        log.info("annotate: %d answer(s) imported from %d segment(s) in %s (%d cached already)",
                 stats.added, stats.segments, directory, stats.already_cached)
    return stats


def _last_rowid(cache_dir: Path) -> int:
    with _read_only(cache_dir) as con:
        rowid: int = con.execute("SELECT COALESCE(MAX(rowid), 0) FROM Cache").fetchone()[0]
        return rowid


def _answers_since(cache_dir: Path, rowid: int) -> list[tuple[int, str]]:
    """(rowid, key) of the answers added after ``rowid``, by anyone, in order (leases and markers are not answers)."""
    with _read_only(cache_dir) as con:
        rows = con.execute(
            "SELECT rowid, key FROM Cache WHERE rowid > ? AND key LIKE ? ORDER BY rowid", (rowid, f"{KEY_VERSION}:%")
        ).fetchall()
    return [(int(r), str(k)) for r, k in rows]


@contextmanager
def _read_only(cache_dir: Path) -> Iterator[sqlite3.Connection]:
    """A read-only SQLite connection to the cache's database (diskcache's ``Cache`` table, in WAL mode:
    readers never block its writers). Only rowids and keys are read here; values go through diskcache."""
    con = sqlite3.connect(f"file:{Path(cache_dir) / 'cache.db'}?mode=ro", uri=True, timeout=60)
    try:
        yield con
    finally:
        con.close()


class AnswerJournal:
    """Around an annotation run: import the segments found, then write new answers as segments at checkpoints."""

    def __init__(self, cache_dir: Path, directory: Path, every_s: float | None = None):
        self.cache_dir = Path(cache_dir)
        self.directory = Path(directory)
        self.every_s = sync_interval() if every_s is None else every_s
        self.run = uuid.uuid4().hex[:8]
        self.written = 0  # segments written by this journal
        self.exported = 0  # answers in them
        self.imported = SegmentStats()
        self._last = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> AnswerJournal:
        self.imported = import_segments(self.cache_dir, self.directory)
        ResponseCache(self.cache_dir).close()  # the database exists before it is read
        self._last = _last_rowid(self.cache_dir)  # what is cached now is either imported or saved elsewhere
        self._thread = threading.Thread(target=self._loop, name="answer journal", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()  # the answers of the last stretch, whether the run finished, failed or was interrupted

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.flush()

    def flush(self) -> int:
        """Write the answers added since the last segment as a new segment; returns how many."""
        with self._lock:
            found = _answers_since(self.cache_dir, self._last)
            if not found:
                return 0
            with ResponseCache(self.cache_dir) as cache:
                answers = cache.get_many([key for _, key in found])
            entries = [(key, answer.to_json()) for (_, key), answer in zip(found, answers) if answer is not None]
            path = self.directory / f"segment-{self.run}-{self.written:06d}.parquet"
            write_segment(path, entries)
            self._last = found[-1][0]
            self.written += 1
            self.exported += len(entries)
            return len(entries)


def save_answers(cache_dir: Path, sentences: Path, config: AnnotateConfig, dest: Path) -> int:
    """Save the cached answers of every sentence of ``sentences`` (a corpus artifact's file) as a segment at
    ``dest``, keyed as ``config`` keys them; returns how many (failed sentences have none)."""
    keys = KeyMaker(config.model, config.sampling())
    template = load_template(config.prompt_template)
    with ResponseCache(cache_dir) as cache:

        def entries() -> Iterator[tuple[str, str]]:
            seen: set[str] = set()
            for batch in pq.ParquetFile(sentences).iter_batches(batch_size=BATCH, columns=["text"]):
                wanted = [keys.key(template.messages(text)) for text in batch.column("text").to_pylist()]
                for key, answer in zip(wanted, cache.get_many(wanted)):
                    if answer is not None and key not in seen:  # a sentence twice in the corpus: one entry
                        seen.add(key)
                        yield key, answer.to_json()

        return write_segment(dest, entries())


def _chunks(items: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
