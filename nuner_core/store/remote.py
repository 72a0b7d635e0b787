"""The artifact store on object storage: stages read and write local files, the store publishes and fetches.

A ``RemoteStore`` is an ``ObjectStore`` (the URL) plus a ``LocalStore`` *mirror* on this
machine (``<local>/remote/<store>/``): fetched artifacts, temporary directories of stages
being published, and the local side of resumable work. Its layout on the store::

    <url>/<stage>/<key>/manifest.json         the commit marker: written last
    <url>/<stage>/<key>/<content id>/...      the files, and a copy of the manifest
    <url>/<stage>/.work/<key>/...             resumable work, synced at checkpoints
    <url>/.prefect-results/...                Prefect's cache records (flows/pipeline.py)

**Publish**: the stage writes into a local temporary directory (``staging``); then its files
are uploaded under a prefix named by their *content id* (a hash of the manifest's checksums),
and the manifest is written last at ``<stage>/<key>/manifest.json``. An object store has no
atomic rename, but one object's PUT is atomic: a reader never sees an artifact before its
manifest, and a manifest always names files that were uploaded whole before it. Two runs
publishing the same key at once upload to their own content ids, so whichever manifest
lands last names a consistent set of files.

**Fetch**: inputs are downloaded into the mirror, ``<local>/remote/<store>/<stage>/<key>/<content id>/``
(``<local>``: ``$NUNER_LOCAL_DIR``, default ``data/``), each file's size and checksum checked
on arrival against the manifest; a directory appears there (renamed from a temporary one)
only once complete, so ``ArtifactRef.dir`` is a local, complete directory, and a second
stage on the same machine reads it without downloading again. A file that arrives with
other content is downloaded again once; if it still differs, the artifact is moved aside
on the store (its manifest removed) and rebuilt, like a damaged local one.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from nuner_core.store.errors import CorruptArtifact, StoreError
from nuner_core.store.keys import ArtifactRef
from nuner_core.store.local import LocalStore
from nuner_core.store.location import default_local_dir, mirror_name
from nuner_core.store.manifest import INCOMPLETE, MANIFEST, check_content, content_id, parse_manifest, remember, validate, write_json_atomic
from nuner_core.store.names import local_path
from nuner_core.store.objects import ObjectStore
from nuner_core.store.protocol import Clock
from nuner_core.store.reading import reading
from nuner_core.store.staging import staged
from nuner_core.store.sync import DirectorySync

log = logging.getLogger(__name__)


class _Mismatch(Exception):
    """A downloaded file is missing, short, or has other bytes than the manifest says (retried once)."""


class RemoteStore:
    """The artifacts under an object-store URL, with a local mirror (see the module docstring).

    ``cache_dir`` is ``<local>/cache``, shared with any other store used on this machine (its
    caches are keyed by content). ``stats`` counts what this instance moved.
    """

    remote = True

    def __init__(self, url: str, *, local_dir: Path | str | None = None, clock: Clock = time.time):
        self.objects = ObjectStore(url)
        self.url = self.objects.url
        self.local = Path(local_dir).resolve() if local_dir is not None else default_local_dir()
        self.mirror = LocalStore(self.local / "remote" / mirror_name(self.url), clock=clock)
        self.clock = clock
        self.stats = {"uploaded_files": 0, "uploaded_bytes": 0, "downloaded_files": 0, "downloaded_bytes": 0}
        self._syncs: dict[tuple[str, str], DirectorySync] = {}
        self._checked = False

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r})"

    def ready(self) -> None:
        """Once per instance, before its first use: the bucket exists and can be listed (else one clear
        StoreError), so that a wrong bucket or missing credentials never read as "no artifact yet"."""
        if not self._checked:
            self.objects.check()
            self._checked = True

    @property
    def root(self) -> Path:
        """This machine's mirror of the store."""
        return self.mirror.root

    @property
    def location(self) -> str:
        return self.url

    @property
    def cache_dir(self) -> Path:
        return self.local / "cache"

    def work_dir(self, stage: str, key: str) -> Path:
        return self.mirror.work_dir(stage, key)

    def url_for(self, stage: str, key: str) -> str:
        return self.objects.url_of(f"{stage}/{key}")

    def local_dir(self, stage: str, key: str, cid: str) -> Path:
        """Where the artifact with this content id is (or will be) on this machine."""
        return self.root / stage / key / cid

    def _ref(self, stage: str, key: str, manifest: dict[str, Any]) -> ArtifactRef:
        """The reference to a committed artifact, its manifest remembered (read without asking the store again)."""
        ref = ArtifactRef(stage=stage, key=key, path=str(self.local_dir(stage, key, content_id(manifest))), url=self.url_for(stage, key))
        remember(ref.path, manifest)
        return ref

    # ---------------------------------------------------------------- finding
    def _read_manifest(self, stage: str, key: str) -> dict[str, Any] | None:
        self.ready()
        raw = self.objects.read_bytes(f"{stage}/{key}/{MANIFEST}")
        if raw is None:
            return None
        return parse_manifest(raw, f"{self.url_for(stage, key)}/{MANIFEST}")

    def _check_listing(self, stage: str, key: str, manifest: Mapping[str, Any]) -> None:
        """Every file of the manifest is on the store, of its size (one listing; content is checked on download)."""
        cid = content_id(manifest)
        listing = self.objects.list_files(f"{stage}/{key}/{cid}")
        where = f"{self.url_for(stage, key)}/{cid}"
        for rel, size in manifest.get("files", {}).items():
            info = listing.get(rel)
            if info is None:
                raise CorruptArtifact(f"{where}: {rel} is missing")
            if info["size"] != size:
                raise CorruptArtifact(f"{where}: {rel} has {info['size']} bytes, manifest says {size}")

    def _find(self, stage: str, key: str, *, check: bool) -> tuple[dict[str, Any], ArtifactRef] | None:
        manifest = self._read_manifest(stage, key)
        if manifest is None:
            return None
        if check:
            self._check_listing(stage, key, manifest)
        return manifest, self._ref(stage, key, manifest)

    def lookup(self, stage: str, key: str, *, verify: bool = False, fetch: bool = True) -> ArtifactRef | None:
        """The committed artifact with this key, fetched (``fetch=False``: only found), or None.

        Found means: its manifest is on the store and every file it lists is there, of its
        size. Fetching checks every byte on arrival; ``verify`` also re-checks a copy fetched
        earlier (a damaged local copy is downloaded again). A damaged artifact on the store is
        moved aside there, and None returned, so the caller rebuilds it.
        """
        try:
            found = self._find(stage, key, check=True)
        except CorruptArtifact as exc:
            self._move_aside_remote(stage, key, exc)
            return None
        if found is None:
            return None
        manifest, ref = found
        if not fetch:
            return ref
        try:
            return self._fetch(ref, manifest, recheck=verify)
        except CorruptArtifact:
            return None  # moved aside on the store by _fetch, which said why

    def is_final(self, stage: str, key: str) -> bool:
        try:
            found = self._find(stage, key, check=True)
        except CorruptArtifact:
            return False
        return found is not None and not found[0].get(INCOMPLETE)

    def exists(self, stage: str, key: str) -> bool:
        try:
            return self._find(stage, key, check=True) is not None
        except CorruptArtifact:
            return False

    def latest(self, stage: str, *, fetch: bool = True) -> ArtifactRef | None:
        """The committed artifact of a stage with the newest ``created_at`` (the publishing store's clock)."""
        self.ready()
        keys = [k for k in self.objects.list_dirs(stage) if not k.startswith(".")]
        raws = self.objects.read_many(f"{stage}/{k}/{MANIFEST}" for k in keys)
        candidates: list[tuple[float, str, dict[str, Any]]] = []
        for key in keys:
            raw = raws.get(f"{stage}/{key}/{MANIFEST}")
            if raw is None:
                continue  # not committed: being published, or killed while it was
            try:
                manifest = parse_manifest(raw, f"{self.url_for(stage, key)}/{MANIFEST}")
            except CorruptArtifact as exc:
                log.warning("skipping corrupt artifact: %s", exc)
                continue
            candidates.append((float(manifest["created_at"]), key, manifest))
        for _, key, manifest in sorted(candidates, key=lambda c: c[0], reverse=True):
            try:
                self._check_listing(stage, key, manifest)
            except CorruptArtifact as exc:
                log.warning("skipping corrupt artifact: %s", exc)
                continue
            ref = self._ref(stage, key, manifest)
            return self._fetch(ref, manifest) if fetch else ref
        return None

    def here(self, ref: ArtifactRef) -> ArtifactRef:
        """The local path of a content id is known without asking the store: ``<root>/<stage>/<key>/<content id>``."""
        if ref.url is None:
            return ref
        cid = Path(ref.path).name
        return ArtifactRef(stage=ref.stage, key=ref.key, path=str(self.local_dir(ref.stage, ref.key, cid)), url=self.url_for(ref.stage, ref.key))

    # ---------------------------------------------------------------- fetching
    def fetch(self, ref: ArtifactRef) -> ArtifactRef:
        """``ref`` with a complete local copy of its files (downloaded now unless this machine has it)."""
        if ref.url is None:
            return ref  # a local artifact
        if (ref.dir / MANIFEST).is_file() and ref.dir.parent.parent.parent == self.root:
            return ref  # a complete copy here (a directory named by its content id appears only complete)
        found = self._find(ref.stage, ref.key, check=False)
        if found is None:
            raise CorruptArtifact(
                f"the {ref.stage} artifact {ref.key} is no longer in the store {self.url} (removed since it was found); "
                f"rerun the {ref.stage!r} stage to rebuild it"
            )
        manifest, current = found
        return self._fetch(current, manifest)

    def _fetch(self, ref: ArtifactRef, manifest: dict[str, Any], *, recheck: bool = False) -> ArtifactRef:
        if (ref.dir / MANIFEST).is_file():
            if not recheck or _intact(ref):
                return ref
        for attempt in (1, 2):
            try:
                self._download(ref, manifest)
                return ref
            except _Mismatch as exc:
                if attempt == 1:  # republished meanwhile, or a bad transfer: read the manifest again and retry once
                    log.warning("%s: %s; downloading it again", ref.location, exc)
                    found = self._find(ref.stage, ref.key, check=False)
                    if found is None:
                        raise CorruptArtifact(
                            f"the {ref.stage} artifact {ref.key} was removed from the store {self.url} while it was "
                            f"downloaded; rerun the {ref.stage!r} stage to rebuild it"
                        ) from None
                    manifest, ref = found
                    continue
                aside = self._move_aside_remote(ref.stage, ref.key, exc)
                raise CorruptArtifact(
                    f"the {ref.stage} artifact {ref.key} on the store is damaged: {exc}. Its manifest was moved aside "
                    f"({aside}); rerun the {ref.stage!r} stage to rebuild it (a run that includes that stage does so)."
                ) from None
        raise AssertionError("unreachable")

    def _download(self, ref: ArtifactRef, manifest: dict[str, Any]) -> None:
        """Download into a temporary directory, check sizes and checksums, rename into place."""
        dest = ref.dir
        tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        files: dict[str, int] = manifest.get("files", {})
        prefix = f"{ref.stage}/{ref.key}/{dest.name}"
        started = time.monotonic()
        try:
            try:
                self.objects.download([(f"{prefix}/{rel}", local_path(tmp, rel)) for rel in files])
            except FileNotFoundError as exc:  # replaced by a newer publication meanwhile
                raise _Mismatch(f"a file is gone from the store ({exc})") from None
            write_json_atomic(tmp / MANIFEST, manifest)
            try:
                check_content(tmp, validate(tmp))
            except CorruptArtifact as exc:
                raise _Mismatch(str(exc).replace(str(tmp), f"{ref.location}/{dest.name}")) from None
            try:
                os.replace(tmp, dest)
            except OSError:  # another process of this machine fetched it first
                if not (dest / MANIFEST).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        size = sum(files.values())
        self.stats["downloaded_files"] += len(files)
        self.stats["downloaded_bytes"] += size
        log.info("fetched the %s artifact %s: %d file(s), %.1f MB in %.1f s", ref.stage, ref.key, len(files), size / 1e6, time.monotonic() - started)

    # ---------------------------------------------------------------- reading
    def verify(self, ref: ArtifactRef) -> ArtifactRef:
        """Check the local copy byte for byte; a damaged one is downloaded again (and checked on arrival)."""
        if ref.url is None:
            return self.mirror.verify(ref)
        if _intact(ref):
            return ref
        fetched = self.fetch(ref)
        if fetched.path != ref.path:
            raise CorruptArtifact(
                f"the {ref.stage} artifact {ref.key} changed on the store while it was read (published again); rerun "
                f"to read the new one"
            )
        return fetched

    def reading(self, inputs: Mapping[str, ArtifactRef]) -> AbstractContextManager[None]:
        """Around a stage that reads ``inputs``: verify them first, and explain a read error they cause (``reading``)."""
        return reading(inputs, self.verify)

    def _move_aside_remote(self, stage: str, key: str, reason: object) -> str | None:
        """Uncommit a damaged artifact: its manifest is copied to ``<stage>/.corrupt-<key>-<time>.json`` and removed."""
        rel = f"{stage}/{key}/{MANIFEST}"
        raw = self.objects.read_bytes(rel)
        if raw is None:
            return None  # another process moved it first
        aside = f"{stage}/.corrupt-{key}-{int(self.clock())}-{os.getpid()}.json"
        self.objects.write_bytes(aside, raw)
        self.objects.delete([rel])
        log.warning("corrupt artifact on the store, its manifest moved to %s and the artifact rebuilt: %s", self.objects.url_of(aside), reason)
        return self.objects.url_of(aside)

    # ------------------------------------------------------------- publishing
    def publish(self, stage: str, key: str, manifest: dict[str, Any]) -> AbstractContextManager[Path]:
        """Yield a temporary directory of the mirror; on clean exit seal the manifest (creation time: the
        store's clock) and commit the artifact to the store (see the module docstring)."""
        return staged(self.mirror.path_for(stage, key), key, manifest, self.clock, lambda tmp: self._commit(stage, key, tmp, manifest))

    def _commit(self, stage: str, key: str, tmp: Path, manifest: dict[str, Any]) -> None:
        """Upload the files under their content id, then the manifest: the commit (see the module docstring)."""
        cid = content_id(manifest)
        base = f"{stage}/{key}"
        try:
            current = self._read_manifest(stage, key)
        except CorruptArtifact:
            current = None  # unreadable: ours replaces it
        if current is not None and not current.get(INCOMPLETE):
            try:
                self._check_listing(stage, key, current)
                log.info("%s artifact %s was published by another run meanwhile; keeping that one", stage, key)
                shutil.rmtree(tmp)
                return
            except CorruptArtifact as exc:
                log.warning("replacing the damaged %s artifact %s on the store: %s", stage, key, exc)
        started = time.monotonic()
        files: dict[str, int] = manifest["files"]
        self.objects.upload((tmp / rel, f"{base}/{cid}/{rel}") for rel in files)
        self.objects.upload([(tmp / MANIFEST, f"{base}/{cid}/{MANIFEST}")])  # the content directory is complete on its own
        listing = self.objects.list_files(f"{base}/{cid}")
        short = [rel for rel, size in files.items() if listing.get(rel, {}).get("size") != size]
        if short:
            raise StoreError(f"publishing {self.url_for(stage, key)}: {short[0]} did not arrive whole on the store; nothing was committed")
        self.objects.upload([(tmp / MANIFEST, f"{base}/{MANIFEST}")])  # the commit marker, last
        size = sum(files.values())
        self.stats["uploaded_files"] += len(files)
        self.stats["uploaded_bytes"] += size
        log.info("published the %s artifact %s to %s: %d file(s), %.1f MB in %.1f s",
                 stage, key, self.url_for(stage, key), len(files), size / 1e6, time.monotonic() - started)
        if current is not None and content_id(current) != cid:  # the replaced publication's files
            self.objects.delete_prefix(f"{base}/{content_id(current)}")
        dest = self.local_dir(stage, key, cid)  # ours is this machine's copy: the next stage here reads it as it is
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, dest)
        except OSError:  # a copy with this content id is here already
            shutil.rmtree(tmp, ignore_errors=True)
        remember(str(dest), manifest)

    # ---------------------------------------------------------- resumable work
    def _work_sync(self, stage: str, key: str) -> DirectorySync:
        if (stage, key) not in self._syncs:
            self._syncs[(stage, key)] = DirectorySync(self.objects, f"{stage}/.work/{key}", self.root / stage / ".work" / key)
        return self._syncs[(stage, key)]

    @contextmanager
    def working(self, stage: str, key: str) -> Iterator[Path]:
        """The work directory, pulled from the store first, pushed at checkpoints and when the stage fails."""
        self.ready()
        path = self.work_dir(stage, key)
        sync = self._work_sync(stage, key)
        sync.pull()
        sync.start()
        try:
            yield path
        except BaseException:
            sync.stop()
            try:
                sync.push()  # what was done so far survives this worker
            except StoreError as exc:
                log.warning("resumable work of the %s stage could not be saved to the store: %s", stage, exc)
            raise
        sync.stop()

    def finish_work(self, stage: str, key: str, *, final: bool) -> None:
        """A final artifact needs no resumable work; an incomplete one keeps it on the store for its rerun,
        wherever that runs (annotation's answers so far, for instance)."""
        sync = self._work_sync(stage, key)
        if final:
            sync.delete_remote()
        else:
            sync.push()
        self._syncs.pop((stage, key), None)
        self.mirror.finish_work(stage, key, final=final)


def _intact(ref: ArtifactRef) -> bool:
    """Whether this machine's copy matches its manifest byte for byte; a damaged copy is removed (to download again)."""
    try:
        check_content(ref.dir, validate(ref.dir))
        return True
    except CorruptArtifact as exc:
        log.warning("the local copy of the %s artifact %s is damaged (%s); downloading it again", ref.stage, ref.key, exc)
        shutil.rmtree(ref.dir, ignore_errors=True)
        return False
