"""What a store holds, how big it is, and what can go: the library behind ``nuner store ls|du|gc``.

Works on either kind of store with one scan: every file (or object) under the root with its
size and time, and every manifest. Only the layout the store itself writes is recognised
(the stage names the caller registers, 16-hex keys and content ids, the store's temporary and
moved-aside names); what it finds, as ``Item``\\ s:

- ``artifact``: ``<stage>/<key>`` with its manifest (``final`` or ``incomplete``), its size, when
  it was created, its title, its inputs (``upstream``) and the artifacts built from it (``used_by``);
- ``uncommitted``: files without a manifest naming them: a publication in progress, one
  killed half-way (object storage: a content directory its manifest does not name), a
  temporary directory (``.tmp-<key>-<pid>@<host>``, ``staging``);
- ``aside``: damaged artifacts moved aside (``.corrupt-*``), replaced ones (``.replaced-*``),
  what a gc killed half-way left (``.gc-*``);
- ``work``: resumable work (``<stage>/.work/<key>``);
- ``records``: Prefect's cache records for an artifact (``.prefect-results/nuner-<stage>-<key>-*``);
  Prefect's other results there are its own and not listed;
- ``local copy`` (object storage): this machine's fetched copies of artifacts no longer on the store;
- ``unknown``: anything else (a user's files, a source tree named as the store by mistake),
  grouped by its first name outside the layout; never removed. A local directory outside the
  stages is not walked (its size is not counted).

``plan_gc`` keeps what is recent, the latest final artifact of each stage (a run of some
stages falls back to it), whatever the caller names (the artifacts of the configs and
experiments it cares about), and everything those were built from; the rest is listed for
removal. Nothing is removed until ``remove`` is called (``nuner store gc --delete``), and it
removes only what the plan named, skipping a key whose manifest changed since the scan.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterable

from nuner_core.hashing import short_hash
from nuner_core.store.errors import CorruptArtifact
from nuner_core.store.manifest import INCOMPLETE, MANIFEST, content_id, parse_manifest
from nuner_core.store.protocol import ArtifactStore
from nuner_core.store.remote import RemoteStore
from nuner_core.store.staging import temp_owner

log = logging.getLogger(__name__)

NOT_STAGES = {"cache", "stack", "remote"}  # the store's directories of a local root that hold no artifacts
RECORD = re.compile(r"^nuner-(?P<stage>[a-z_]+)-(?P<key>[0-9a-f]{16})-[0-9a-f]{8}$")  # tasks.common.ArtifactCache
RESULTS = ".prefect-results"
HEX = re.compile(r"^[0-9a-f]{16}$")  # an artifact key, a content id
ASIDE = re.compile(r"^\.(?:corrupt|replaced|gc)-(?P<key>[0-9a-f]{16})(?:-[0-9]+){1,2}(?:\.json)?$")
UNKNOWN = "unknown, never removed"
CHECKED = ("artifact", "uncommitted", "work", "records", "local copy")  # removed only while their key's manifest is as scanned


@dataclass
class Item:
    kind: str  # artifact | uncommitted | aside | work | records | local copy | unknown
    stage: str  # unknown: the first name of its path
    key: str  # unknown: the rest of its path ("" for a top-level name)
    size: int = 0  # bytes
    created: float = 0.0  # the manifest's created_at, else the newest file's time
    state: str = ""  # artifact: final | incomplete
    title: str = ""
    upstream: dict[str, str] = field(default_factory=dict)
    used_by: list[str] = field(default_factory=list)  # "<stage>/<key>" of the artifacts that read it
    paths: set[str] = field(default_factory=set)  # what removing it removes: relative names (local copy: absolute dirs)
    seen: str = ""  # its key's manifest as scanned (a fingerprint; "" when there was none)
    running: str = ""  # a temporary directory that may be in use: why

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.key}" if self.key else self.stage

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "stage": self.stage, "key": self.key, "size": self.size, "created": self.created,
            "state": self.state, "title": self.title, "upstream": self.upstream, "used_by": sorted(self.used_by),
        }  # fmt: skip


def _fingerprint(raw: bytes | None) -> str:
    return "" if raw is None else short_hash(raw.decode("latin-1"))  # any bytes: a changed manifest changes it


def _marker(store: ArtifactStore, stage: str, key: str) -> str:
    """The fingerprint of the key's manifest as it is now."""
    name = f"{stage}/{key}/{MANIFEST}"
    if isinstance(store, RemoteStore):
        return _fingerprint(store.objects.read_bytes(name))
    try:
        return _fingerprint((store.root / name).read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return ""


def _files(store: ArtifactStore, stages: Collection[str]) -> tuple[dict[str, tuple[int, float]], dict[str, tuple[int, float]]]:
    """Every file under the store's root: relative name -> (size, modification time); and, on a local
    root, the names at its top that are neither a stage nor the store's own (a directory: not walked, size 0)."""
    if isinstance(store, RemoteStore):
        store.ready()
        return {rel: (info["size"], info["mtime"]) for rel, info in store.objects.list_files("").items()}, {}
    found: dict[str, tuple[int, float]] = {}
    foreign: dict[str, tuple[int, float]] = {}
    if not store.root.is_dir():
        return found, foreign
    for top in store.root.iterdir():
        if top.name in NOT_STAGES:
            continue
        if top.name not in stages and top.name != RESULTS or not top.is_dir():
            stat = top.lstat()
            foreign[top.name] = (0 if top.is_dir() else stat.st_size, stat.st_mtime)
            continue
        for path in top.rglob("*"):
            try:
                if path.is_file():
                    stat = path.stat()
                    found[path.relative_to(store.root).as_posix()] = (stat.st_size, stat.st_mtime)
            except FileNotFoundError:  # removed while we looked (a run publishing)
                continue
    return found, foreign


def _manifests(store: ArtifactStore, names: list[str]) -> dict[str, bytes | None]:
    if isinstance(store, RemoteStore):
        return store.objects.read_many(names)
    raws: dict[str, bytes | None] = {}
    for name in names:
        try:
            raws[name] = (store.root / name).read_bytes()
        except FileNotFoundError:
            raws[name] = None
    return raws


def _parse(store: ArtifactStore, name: str, raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:  # the one manifest schema: anything else is listed as uncommitted
        return parse_manifest(raw, f"{store.location}/{name}")
    except CorruptArtifact as exc:
        log.warning("%s (listed as uncommitted)", exc)
        return None


def _place(parts: list[str], stages: Collection[str], remote: bool, committed: dict[tuple[str, str], dict[str, Any]]) -> tuple[str, str, str, str]:
    """Where a file belongs: (kind, stage, key, what removing it removes). On object storage an
    artifact's or publication's file is removed as itself; locally, with its directory."""
    rel = "/".join(parts)
    if parts[0] == RESULTS:
        match = RECORD.match(parts[1]) if len(parts) == 2 else None
        return ("records", match["stage"], match["key"], rel) if match else ("", "", "", "")  # Prefect's own otherwise
    stage = parts[0]
    if stage not in stages or len(parts) < 2:
        return "unknown", stage, "", stage
    second = parts[1]
    owner = temp_owner(second)
    aside = ASIDE.match(second)
    if second == ".work" and len(parts) > 3 and HEX.match(parts[2]):
        return "work", stage, parts[2], rel if remote else "/".join(parts[:3])
    if not remote and len(parts) > 2 and owner is not None and HEX.match(owner.key):
        return "uncommitted", stage, owner.key, f"{stage}/{second}"
    if aside and (remote == (len(parts) == 2)):  # on object storage: a moved-aside manifest; locally a directory
        return "aside", stage, aside["key"], rel if remote else f"{stage}/{second}"
    if not HEX.match(second) or len(parts) < 3:
        rest = "/".join(parts[1:3]) if second == ".work" and len(parts) > 3 else second
        return "unknown", stage, rest, f"{stage}/{rest}"
    manifest = committed.get((stage, second))
    if not remote:
        return ("artifact" if manifest is not None else "uncommitted"), stage, second, f"{stage}/{second}"
    if parts[2] == MANIFEST and len(parts) == 3:
        return ("artifact" if manifest is not None else "uncommitted"), stage, second, rel
    if len(parts) > 3 and HEX.match(parts[2]):
        ours = manifest is not None and parts[2] == content_id(manifest)
        return ("artifact" if ours else "uncommitted"), stage, second, rel  # else a stale or partial upload
    return "unknown", stage, f"{second}/{parts[2]}", "/".join(parts[:3])


def scan(store: ArtifactStore, stages: Collection[str]) -> list[Item]:
    """Everything the store holds, as items (artifacts first, in stage and time order). ``stages``: the
    registered stage names (``nuner_core.registry.STAGE_NAMES``): any other top-level name is unknown."""
    files, foreign = _files(store, stages)
    remote = isinstance(store, RemoteStore)
    markers = sorted(n for n in files if n.count("/") == 2 and n.endswith("/" + MANIFEST) and n.split("/")[0] in stages
                     and HEX.match(n.split("/")[1]))
    raws = _manifests(store, markers)
    committed: dict[tuple[str, str], dict[str, Any]] = {}
    seen = {tuple(name.split("/")[:2]): _fingerprint(raw) for name, raw in raws.items()}
    for name, raw in raws.items():
        manifest = _parse(store, name, raw)
        if manifest is not None:
            stage, key, _ = name.split("/")
            committed[(stage, key)] = manifest
    items: dict[tuple[str, str, str], Item] = {}

    def add(kind: str, stage: str, key: str, rel: str, size: int, mtime: float) -> None:
        item = items.setdefault((kind, stage, key), Item(kind, stage, key, seen=seen.get((stage, key), "")))
        item.size += size
        item.created = max(item.created, mtime)
        item.paths.add(rel)

    for rel, (size, mtime) in files.items():
        kind, stage, key, where = _place(rel.split("/"), stages, remote, committed)
        if kind:
            add(kind, stage, key, where, size, mtime)
    for name, (size, mtime) in foreign.items():
        add("unknown", name, "", name, size, mtime)
    for (stage, key), manifest in committed.items():
        item = items.setdefault(("artifact", stage, key), Item("artifact", stage, key, paths={f"{stage}/{key}"}, seen=seen[(stage, key)]))
        item.created = float(manifest.get("created_at") or item.created)
        item.state = "incomplete" if manifest.get(INCOMPLETE) else "final"
        item.title = str(manifest.get("title") or stage)
        item.upstream = {str(k): str(v) for k, v in (manifest.get("upstream") or {}).items()}
    for item in items.values():
        if item.kind == "uncommitted":
            item.running = next((why for p in sorted(item.paths) if (o := temp_owner(Path(p).name)) and (why := o.running())), "")
    artifacts = {(i.stage, i.key): i for i in items.values() if i.kind == "artifact"}
    for item in artifacts.values():
        for up_stage, up_key in item.upstream.items():
            if (up_stage, up_key) in artifacts:
                artifacts[(up_stage, up_key)].used_by.append(item.name)
    if isinstance(store, RemoteStore):
        for item in _stale_local_copies(store, stages, committed, seen):
            items[(item.kind, item.stage, item.key + item.title)] = item
    order = {"artifact": 0, "work": 1, "uncommitted": 2, "aside": 3, "records": 4, "local copy": 5, "unknown": 6}
    return sorted(items.values(), key=lambda i: (order[i.kind], i.stage, i.created, i.key))


def _stale_local_copies(
    store: RemoteStore, stages: Collection[str], committed: dict[tuple[str, str], dict[str, Any]], seen: dict[tuple[str, ...], str]
) -> list[Item]:
    """This machine's copies (``<local>/remote/<store>/<stage>/<key>/<content id>``) that the store no longer names."""
    out: list[Item] = []
    if not store.root.is_dir():
        return out
    for stage_dir in store.root.iterdir():
        if stage_dir.name not in stages or not stage_dir.is_dir():
            continue
        for key_dir in stage_dir.iterdir():
            if not HEX.match(key_dir.name) or not key_dir.is_dir():
                continue
            manifest = committed.get((stage_dir.name, key_dir.name))
            for copy in key_dir.iterdir():
                owner = temp_owner(copy.name)
                if manifest is not None and copy.name == content_id(manifest):
                    continue
                if not HEX.match(copy.name) and (owner is None or not HEX.match(owner.key) or owner.running()):
                    continue  # not a copy, or one being downloaded right now
                size = sum(p.stat().st_size for p in copy.rglob("*") if p.is_file())
                out.append(Item("local copy", stage_dir.name, key_dir.name, size, copy.stat().st_mtime, title=f" ({copy.name})",
                                paths={str(copy)}, seen=seen.get((stage_dir.name, key_dir.name), "")))
    return out


@dataclass
class GcPlan:
    keep: dict[str, str]  # "<kind> <stage>/<key>" -> why it stays
    remove: list[Item]

    @property
    def size(self) -> int:
        return sum(i.size for i in self.remove)


def plan_gc(
    items: list[Item],
    *,
    wanted: Iterable[tuple[str, str]] = (),
    keep_days: float = 14.0,
    grace_hours: float = 24.0,
    now: float,
) -> GcPlan:
    """Decide what goes. Kept: artifacts created in the last ``keep_days``, the latest final artifact of
    each stage, the ``wanted`` (stage, key) pairs, and every artifact those were built from (their
    Prefect records and resumable work with them); files of unfinished or damaged publications
    younger than ``grace_hours`` (a publication may be in progress), and a temporary directory whose
    process may still run (this host's, running; any of another host's). Unknown files stay. Everything
    else is removed.
    Ages are measured at ``now``: the store's clock (``store.clock()``)."""
    artifacts = {(i.stage, i.key): i for i in items if i.kind == "artifact"}
    why: dict[tuple[str, str], str] = {}
    for pair in wanted:
        if pair in artifacts:
            why[pair] = "named by a given config or experiment"
    latest: dict[str, Item] = {}
    for item in artifacts.values():
        if item.state == "final" and (item.stage not in latest or item.created > latest[item.stage].created):
            latest[item.stage] = item
    for item in latest.values():
        why.setdefault((item.stage, item.key), "the latest final artifact of its stage")
    for pair, item in artifacts.items():
        age_days = (now - item.created) / 86400
        if age_days < keep_days:
            why.setdefault(pair, f"created {age_days:.1f} days ago (under --keep-days {keep_days:g})")
    todo = list(why)
    while todo:  # inputs of what is kept are kept
        stage, key = todo.pop()
        for up in artifacts[(stage, key)].upstream.items() if (stage, key) in artifacts else ():
            if up in artifacts and up not in why:
                why[up] = f"an input of {stage}/{key}"
                todo.append(up)
    keep: dict[str, str] = {}
    remove: list[Item] = []
    for item in items:
        pair = (item.stage, item.key)
        label = f"{item.kind} {item.name}"
        if item.kind in ("artifact", "records"):
            if pair in why:
                keep[label] = why[pair]
            else:
                remove.append(item)
        elif item.kind == "work":
            age_days = (now - item.created) / 86400
            if artifacts.get(pair) is not None and artifacts[pair].state == "final":
                remove.append(item)  # left by a run whose artifact is final: nothing to resume
            elif age_days < keep_days:
                keep[label] = f"resumable work touched {age_days:.1f} days ago"
            else:
                remove.append(item)
        elif item.kind == "unknown":
            keep[label] = UNKNOWN
        elif item.running:
            keep[label] = item.running
        elif item.kind in ("uncommitted", "aside"):
            age_hours = (now - item.created) / 3600
            if age_hours < grace_hours:
                keep[label] = f"{age_hours:.1f} h old (under --grace-hours {grace_hours:g}: maybe still being published)"
            else:
                remove.append(item)
        else:  # local copy: the store no longer names it
            remove.append(item)
    return GcPlan(keep=keep, remove=remove)


def remove(store: ArtifactStore, items: Iterable[Item]) -> list[Item]:
    """Remove what ``plan_gc`` listed, and only that; returns what was removed. An item whose key's
    manifest changed since the scan (a run published or completed it meanwhile) is kept, and so is a
    temporary directory whose process now runs. An artifact is uncommitted first (its manifest
    removed, or its directory renamed), so no reader takes a half-removed one for complete."""
    removed: list[Item] = []
    uncommitted: set[tuple[str, str]] = set()  # artifacts removed here: their records and work follow them
    for item in items:
        if item.kind == "unknown":
            continue  # never: not the store's
        expected = "" if (item.stage, item.key) in uncommitted else item.seen
        if item.kind in CHECKED and _marker(store, item.stage, item.key) != expected:
            log.warning("kept %s %s: its manifest changed since the scan (a run published it meanwhile)", item.kind, item.name)
            continue
        if item.kind == "local copy":
            for path in item.paths:
                shutil.rmtree(path, ignore_errors=True)
        elif isinstance(store, RemoteStore):
            _remove_objects(store, item)
        elif not _remove_local(store, item):
            continue
        removed.append(item)
        if item.kind == "artifact":
            uncommitted.add((item.stage, item.key))
        log.info("removed %s %s (%d bytes)", item.kind, item.name, item.size)
    return removed


def _remove_objects(store: RemoteStore, item: Item) -> None:
    """Delete the objects the scan found for ``item`` (a manifest first), never a whole prefix: another
    worker may be uploading a new content id beside them. An object store has no conditional delete:
    a manifest written between ``remove``'s read and this delete is lost (its files stay, uncommitted,
    and the next run rebuilds the artifact); the window is one request."""
    marker = f"{item.stage}/{item.key}/{MANIFEST}"
    if marker in item.paths:
        store.objects.delete([marker])  # uncommitted from here on
    store.objects.delete(sorted(item.paths - {marker}))
    if item.kind == "artifact":  # and this machine's copy of that content
        for cid in {rel.split("/")[2] for rel in item.paths if rel.count("/") > 2}:
            shutil.rmtree(store.local_dir(item.stage, item.key, cid), ignore_errors=True)


def _remove_local(store: ArtifactStore, item: Item) -> bool:
    """Remove a local item's files; False when any is kept (a temporary directory's process runs, an
    artifact's manifest changed under the rename)."""
    kept = False
    for rel in sorted(item.paths):
        target = store.root / rel
        owner = temp_owner(target.name) if item.kind == "uncommitted" else None
        if owner is not None and owner.running():
            log.warning("kept %s: %s", target, owner.running())
            kept = True
        elif item.kind in ("artifact", "uncommitted") and target.name == item.key:
            kept |= not _take_away(target, item.seen)
        elif target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    return not kept


def _take_away(target: Path, seen: str) -> bool:
    """Rename an artifact's directory out of readers' sight, then remove it, unless its manifest is no
    longer the one scanned (a run replaced it between the check and the rename): then it is put back."""
    doomed = target.with_name(f".gc-{target.name}-{os.getpid()}")
    try:
        target.rename(doomed)
    except FileNotFoundError:
        return True  # gone already
    try:
        now = _fingerprint((doomed / MANIFEST).read_bytes())
    except FileNotFoundError:
        now = ""
    if now != seen:
        try:
            doomed.rename(target)
        except OSError:  # yet another run published it meanwhile: this copy is left aside, for a later gc
            log.warning("%s changed while gc removed it; left at %s", target, doomed)
        return False
    shutil.rmtree(doomed, ignore_errors=True)
    return True
