"""The artifact store in a local directory: atomic publish by rename, lookup, damage moved aside.

Layout: ``<root>/<stage>/<key>/`` holds a finished artifact and its ``manifest.json``; work
in progress is built in ``<root>/<stage>/.tmp-<key>-<pid>/`` and renamed into place only
once complete (``staging``). A directory whose files do not match its manifest is corrupt:
reported, moved aside (``.corrupt-<key>-<time>-<pid>``) and rebuilt.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from nuner_core.store.errors import CorruptArtifact
from nuner_core.store.keys import ArtifactRef
from nuner_core.store.manifest import INCOMPLETE, check_content, validate
from nuner_core.store.protocol import Clock
from nuner_core.store.reading import reading
from nuner_core.store.staging import staged

log = logging.getLogger(__name__)


class LocalStore:
    """The artifacts under one local directory (``open_store`` makes one for a local root)."""

    remote = False

    def __init__(self, root: Path, *, clock: Clock = time.time):
        self.root = root
        self.clock = clock

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def location(self) -> str:
        """Where the artifacts are: this directory."""
        return str(self.root)

    def path_for(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    @property
    def cache_dir(self) -> Path:
        """Caches shared across runs and artifact keys (LLM responses, encoder features)."""
        return self.root / "cache"

    def work_dir(self, stage: str, key: str) -> Path:
        """Persistent scratch space for resumable work (checkpoints, partial shards)."""
        path = self.root / stage / ".work" / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ---------------------------------------------------------------- finding
    def lookup(self, stage: str, key: str, *, verify: bool = False, fetch: bool = True) -> ArtifactRef | None:
        """The complete artifact with this key, or None. A corrupt one is moved aside (and so rebuilt).

        ``verify=True`` also checks every file's content against its checksum (reads every
        byte): use it where the artifact is about to be read or reused. ``fetch`` matters on
        object storage only (``RemoteStore``): a local artifact is always here.
        """
        path = self.path_for(stage, key)
        if not path.exists():
            return None
        try:
            manifest = validate(path)
            if verify:
                check_content(path, manifest)
        except CorruptArtifact as exc:
            quarantine = self._move_aside(path, key)
            log.warning("corrupt artifact, moved to %s and rebuilt: %s", quarantine, exc)
            return None
        return ArtifactRef(stage=stage, key=key, path=str(path))

    def is_final(self, stage: str, key: str) -> bool:
        """A complete artifact (sizes checked) that its stage would not build again: not incomplete."""
        try:
            return not validate(self.path_for(stage, key)).get(INCOMPLETE)
        except CorruptArtifact:
            return False

    def exists(self, stage: str, key: str) -> bool:
        """Cheap check (no quarantine side effect) used by the Prefect cache policy."""
        try:
            validate(self.path_for(stage, key))
        except CorruptArtifact:
            return False
        return True

    def latest(self, stage: str, *, fetch: bool = True) -> ArtifactRef | None:
        """The most recently published complete artifact of a stage: the newest ``created_at``, as the
        store's clock stamped it (``fetch``: see ``lookup``)."""
        stage_dir = self.root / stage
        if not stage_dir.is_dir():
            return None
        best: tuple[float, Path] | None = None
        for path in stage_dir.iterdir():
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                manifest = validate(path)
            except CorruptArtifact as exc:
                log.warning("skipping corrupt artifact: %s", exc)
                continue
            created = float(manifest["created_at"])
            if best is None or created > best[0]:
                best = (created, path)
        return None if best is None else ArtifactRef(stage=stage, key=best[1].name, path=str(best[1]))

    def fetch(self, ref: ArtifactRef) -> ArtifactRef:
        """``ref`` with its files in a local directory (a local store's artifacts are there already)."""
        return ref

    def here(self, ref: ArtifactRef) -> ArtifactRef:
        """``ref`` as this machine names it, without any I/O (a Prefect cache record may come from another
        machine, whose local copy lives elsewhere). A local store's references are the same everywhere."""
        return ref

    # ---------------------------------------------------------------- reading
    def verify(self, ref: ArtifactRef) -> ArtifactRef:
        """Check every file of ``ref`` against its checksum; a damaged artifact is moved aside and raises.

        The CorruptArtifact names the file and the stage to rerun, and the artifact is gone
        from the store, so the next run rebuilds it.
        """
        path = ref.dir
        try:
            check_content(path, validate(path))
        except CorruptArtifact as exc:
            quarantine = self._move_aside(path, ref.key) if path.exists() else None
            where = f"moved aside to {quarantine}" if quarantine else "it is gone"
            log.warning("corrupt artifact, %s: %s", where, exc)
            raise CorruptArtifact(
                f"the {ref.stage} artifact {ref.key} is damaged: {exc}. It was {where}; rerun the {ref.stage!r} "
                f"stage to rebuild it (a run that includes that stage does so)."
            ) from None
        return ref

    def reading(self, inputs: Mapping[str, ArtifactRef]) -> AbstractContextManager[None]:
        """Around a stage that reads ``inputs``: verify them first, and explain a read error they cause (``reading``)."""
        return reading(inputs, self.verify)

    def _move_aside(self, path: Path, key: str) -> Path:
        quarantine = path.with_name(f".corrupt-{key}-{int(self.clock())}-{os.getpid()}")
        try:
            path.rename(quarantine)
        except FileNotFoundError:  # another process moved it first
            pass
        return quarantine

    # ------------------------------------------------------------- publishing
    def publish(self, stage: str, key: str, manifest: dict[str, Any]) -> AbstractContextManager[Path]:
        """Yield a temporary directory; on clean exit write the manifest and rename it into place.

        The caller fills ``manifest`` (a dict) while working; file sizes, checksums and the
        creation time (the store's clock) are added here. On an exception the temporary
        directory is removed. If another run published a final, intact artifact with this key
        meanwhile (same key, same artifact), that one is kept and this one dropped; an
        incomplete or damaged one is replaced.
        """
        return staged(self.path_for(stage, key), key, manifest, self.clock, lambda tmp: self._commit(stage, key, tmp))

    def _commit(self, stage: str, key: str, tmp: Path) -> None:
        """Put the finished temporary directory (manifest written) in place: two renames at most."""
        final = self.path_for(stage, key)
        if final.exists() and _intact_and_final(final):
            log.info("%s artifact %s was published by another run meanwhile; keeping that one", stage, key)
            shutil.rmtree(tmp)
            return
        aside = final.with_name(f".replaced-{key}-{os.getpid()}")
        if final.exists():  # incomplete, or corrupt: ours replaces it (moved first, so the swap is two renames)
            os.replace(final, aside)
        try:
            os.replace(tmp, final)
        except OSError:  # another run's rename came between (a directory cannot replace a full one)
            if not _intact_and_final(final):
                raise
            log.info("%s artifact %s was published by another run meanwhile; keeping that one", stage, key)
            shutil.rmtree(tmp)
        shutil.rmtree(aside, ignore_errors=True)

    # ---------------------------------------------------------- resumable work
    @contextmanager
    def working(self, stage: str, key: str) -> Iterator[Path]:
        """The stage's resumable work directory (``work_dir``), for the duration of its run."""
        yield self.work_dir(stage, key)

    def finish_work(self, stage: str, key: str, *, final: bool) -> None:
        """After publishing: the resumable work is not needed any more (an incomplete artifact's rerun
        starts from its cache, which lives outside the work directory)."""
        shutil.rmtree(self.root / stage / ".work" / key, ignore_errors=True)


def _intact_and_final(path: Path) -> bool:
    try:
        manifest = validate(path)
        check_content(path, manifest)
    except CorruptArtifact:
        return False
    return not manifest.get(INCOMPLETE)
