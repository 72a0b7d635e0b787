"""A local directory of resumable work, kept on the object store so that another worker can resume it.

A stage keeps its resumable work (pre-training checkpoints, annotation's answers so far) in
a local ``work_dir``; with the store on object storage, ``DirectorySync`` mirrors it under
``<store>/<stage>/.work/<key>/``:

- **pull** once, before the stage starts: objects missing locally, of another size, or newer
  than the local copy are downloaded (a stage killed on worker A resumes on worker B); an
  object whose name would land outside the directory (``../``, absolute: whoever can write
  the bucket chooses names) is skipped, said, and otherwise ignored;
- **push** at checkpoints: a background thread looks for changed files every ``every_s``
  seconds and uploads them, then deletes the objects whose local file is gone (old
  checkpoints pruned by the training loop: new files first, so the store always holds at
  least one whole checkpoint); a last push when the stage fails or is interrupted.

Files being written are never uploaded half: writers here write ``<name>.tmp`` / ``.part``
and rename (``checkpoint.save_atomic``), and those names are skipped. A file appended to
(``metrics.jsonl``) may be caught mid-line; the training loop rewrites it from the
checkpoint's history on resume. An object store's PUT is atomic, so a kill during a push
leaves the previous version of each object, never a torn one.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from nuner_core.store.errors import CorruptArtifact, StoreError
from nuner_core.store.names import local_path
from nuner_core.store.objects import ObjectStore

log = logging.getLogger(__name__)

SKIP_SUFFIXES = (".tmp", ".part")  # files still being written (renamed into place when complete)
DEFAULT_EVERY_S = 60.0  # push interval; NUNER_SYNC_EVERY_S overrides it


def sync_interval() -> float:
    """Seconds between two pushes of resumable work: ``$NUNER_SYNC_EVERY_S``, default 60."""
    raw = os.environ.get("NUNER_SYNC_EVERY_S")
    if not raw:
        return DEFAULT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        raise StoreError(f"NUNER_SYNC_EVERY_S={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise StoreError(f"NUNER_SYNC_EVERY_S={raw!r} must be positive")
    return value


def _skipped(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.endswith(SKIP_SUFFIXES) or base.startswith(".tmp")


class DirectorySync:
    """Mirror ``local`` to ``objects/prefix``: ``pull`` once, ``push`` at checkpoints (``start``/``stop``)."""

    def __init__(self, objects: ObjectStore, prefix: str, local: Path, every_s: float | None = None):
        self.objects = objects
        self.prefix = prefix.strip("/")
        self.local = Path(local)
        self.every_s = sync_interval() if every_s is None else every_s
        self._pushed: dict[str, tuple[int, int]] = {}  # rel -> (size, mtime_ns) as last uploaded or downloaded
        self._remote: set[str] = set()  # names known to be on the store
        self._lock = threading.Lock()  # one push at a time (the thread, and the last push on failure)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pushes = 0  # pushes that uploaded or deleted something
        self.uploaded_bytes = 0
        self.failed: str | None = None  # the last push error, if the last push failed

    def _local_files(self) -> dict[str, tuple[int, int]]:
        if not self.local.is_dir():
            return {}
        found: dict[str, tuple[int, int]] = {}
        for path in self.local.rglob("*"):
            rel = path.relative_to(self.local).as_posix()
            if _skipped(rel):
                continue
            try:
                if not path.is_file():
                    continue
                stat = path.stat()
            except FileNotFoundError:  # deleted while we looked (a pruned checkpoint)
                continue
            found[rel] = (stat.st_size, stat.st_mtime_ns)
        return found

    def pull(self) -> int:
        """Download what the store has and this directory lacks (or holds older); returns the files downloaded."""
        remote = self._listing()
        local = self._local_files()
        wanted: list[tuple[str, Path]] = []
        for rel, info in remote.items():
            if _skipped(rel):
                continue
            have = local.get(rel)
            if have is None or have[0] != info["size"] or (info["mtime"] and have[1] / 1e9 + 1.0 < info["mtime"]):
                wanted.append((f"{self.prefix}/{rel}", local_path(self.local, rel)))
        self.local.mkdir(parents=True, exist_ok=True)
        self.objects.download(wanted)
        self._remote = set(remote)
        # In step with the store: what was just downloaded, and local copies no newer than the object
        # (a local file written after the store's copy is pushed at the first push).
        fetched = {dest.relative_to(self.local).as_posix() for _, dest in wanted}
        self._pushed = {
            rel: state
            for rel, state in self._local_files().items()
            if rel in fetched or (rel in remote and state[0] == remote[rel]["size"] and state[1] / 1e9 <= (remote[rel]["mtime"] or 0))
        }
        if wanted:
            log.info("resumable work: %d file(s) pulled from %s into %s", len(wanted), self.objects.url_of(self.prefix), self.local)
        return len(wanted)

    def _listing(self) -> dict[str, dict[str, Any]]:
        """The store's objects under the prefix whose names map inside ``local``; the others are skipped, said once."""
        found: dict[str, dict[str, Any]] = {}
        for rel, info in self.objects.list_files(self.prefix).items():
            try:
                local_path(self.local, rel)
            except CorruptArtifact as exc:
                log.warning("resumable work: the object %s is skipped: %s", self.objects.url_of(f"{self.prefix}/{rel}"), exc)
                continue
            found[rel] = info
        return found

    def push(self) -> int:
        """Upload changed files, then delete objects whose file is gone; returns the files uploaded."""
        with self._lock:
            local = self._local_files()
            changed = [rel for rel, state in local.items() if self._pushed.get(rel) != state]
            self.objects.upload((self.local / rel, f"{self.prefix}/{rel}") for rel in changed)
            gone = sorted(self._remote - set(local))
            self.objects.delete(f"{self.prefix}/{rel}" for rel in gone)
            for rel in changed:
                self._pushed[rel] = local[rel]
                self.uploaded_bytes += local[rel][0]
            for rel in gone:
                self._pushed.pop(rel, None)
            self._remote = (self._remote | set(changed)) - set(gone)
            if changed or gone:
                self.pushes += 1
                log.info("resumable work: %d file(s) pushed to %s, %d removed", len(changed), self.objects.url_of(self.prefix), len(gone))
            return len(changed)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.push()
                self.failed = None
            except StoreError as exc:  # the stage goes on: the next push tries again, and says so
                self.failed = str(exc)
                log.warning("resumable work not pushed this time (retried in %.0f s): %s", self.every_s, exc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"sync {self.prefix}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def delete_remote(self) -> int:
        """Remove the mirror from the store (the work is published: nothing left to resume)."""
        return self.objects.delete_prefix(self.prefix)
