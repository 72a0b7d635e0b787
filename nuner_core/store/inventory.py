"""What a store holds, how big it is, and what can go: the library behind ``nuner store ls|du|gc``.

Works on either kind of store with one scan: every file (or object) under the root with its
size and time, and every manifest. What it finds, as ``Item``\\ s:

- ``artifact``: ``<stage>/<key>`` with its manifest (``final`` or ``incomplete``), its size, when
  it was created, its title, its inputs (``upstream``) and the artifacts built from it (``used_by``);
- ``uncommitted``: files without a manifest naming them: a publication in progress, one
  killed half-way (object storage: a content directory its manifest does not name), a
  temporary directory (``.tmp-*``);
- ``aside``: damaged artifacts moved aside (``.corrupt-*``) or replaced ones (``.replaced-*``);
- ``work``: resumable work (``<stage>/.work/<key>``);
- ``records``: Prefect's cache records for an artifact (``.prefect-results/nuner-<stage>-<key>-*``);
- ``local copy`` (object storage): this machine's fetched copies of artifacts no longer on the store.

``plan_gc`` keeps what is recent, the latest final artifact of each stage (a run of some
stages falls back to it), whatever the caller names (the artifacts of the configs and
experiments it cares about), and everything those were built from; the rest is listed for
removal. Nothing is removed until ``remove`` is called (``nuner store gc --delete``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Any, Iterable

from nuner_core.store.errors import CorruptArtifact
from nuner_core.store.manifest import INCOMPLETE, MANIFEST, content_id, parse_manifest
from nuner_core.store.protocol import ArtifactStore
from nuner_core.store.remote import RemoteStore
from nuner_core.store.staging import alive

log = logging.getLogger(__name__)

NOT_STAGES = {"cache", "stack", "remote"}  # directories of a local root that hold no artifacts
RECORD = re.compile(r"^nuner-(?P<stage>[a-z_]+)-(?P<key>[0-9a-f]{16})-[0-9a-f]{8}$")  # tasks.common.ArtifactCache
RESULTS = ".prefect-results"


@dataclass
class Item:
    kind: str  # artifact | uncommitted | aside | work | records | local copy
    stage: str
    key: str
    size: int = 0  # bytes
    created: float = 0.0  # the manifest's created_at, else the newest file's time
    state: str = ""  # artifact: final | incomplete
    title: str = ""
    upstream: dict[str, str] = field(default_factory=dict)
    used_by: list[str] = field(default_factory=list)  # "<stage>/<key>" of the artifacts that read it
    paths: set[str] = field(default_factory=set)  # what removing it removes: relative file names (local copy: absolute dirs)

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.key}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "stage": self.stage, "key": self.key, "size": self.size, "created": self.created,
            "state": self.state, "title": self.title, "upstream": self.upstream, "used_by": sorted(self.used_by),
        }  # fmt: skip


def _files(store: ArtifactStore) -> dict[str, tuple[int, float]]:
    """Every file under the store's root: relative name -> (size, modification time)."""
    if isinstance(store, RemoteStore):
        store.ready()
        return {rel: (info["size"], info["mtime"]) for rel, info in store.objects.list_files("").items()}
    found: dict[str, tuple[int, float]] = {}
    if not store.root.is_dir():
        return found
    for top in store.root.iterdir():
        if top.name in NOT_STAGES or (top.name.startswith(".") and top.name != RESULTS) or not top.is_dir():
            continue
        for path in top.rglob("*"):
            try:
                if path.is_file():
                    stat = path.stat()
                    found[path.relative_to(store.root).as_posix()] = (stat.st_size, stat.st_mtime)
            except FileNotFoundError:  # removed while we looked (a run publishing)
                continue
    return found


def _manifests(store: ArtifactStore, names: list[str]) -> dict[str, dict[str, Any] | None]:
    raws: dict[str, bytes | None]
    if isinstance(store, RemoteStore):
        raws = store.objects.read_many(names)
    else:
        raws = {}
        for name in names:
            try:
                raws[name] = (store.root / name).read_bytes()
            except FileNotFoundError:
                raws[name] = None
    out: dict[str, dict[str, Any] | None] = {}
    for name, raw in raws.items():
        try:
            out[name] = parse_manifest(raw, f"{store.location}/{name}") if raw is not None else None
        except CorruptArtifact as exc:
            log.warning("%s (listed as uncommitted)", exc)
            out[name] = None
    return out


def scan(store: ArtifactStore) -> list[Item]:
    """Everything the store holds, as items (artifacts first, in stage and time order)."""
    files = _files(store)
    remote = isinstance(store, RemoteStore)
    manifests = _manifests(store, sorted(n for n in files if n.count("/") == 2 and n.endswith("/" + MANIFEST)
                                          and not n.split("/")[1].startswith(".")))
    committed: dict[tuple[str, str], dict[str, Any]] = {}
    for name, manifest in manifests.items():
        if manifest is not None:
            stage, key, _ = name.split("/")
            committed[(stage, key)] = manifest
    items: dict[tuple[str, str, str], Item] = {}

    def add(kind: str, stage: str, key: str, rel: str, size: int, mtime: float) -> None:
        item = items.setdefault((kind, stage, key), Item(kind, stage, key))
        item.size += size
        item.created = max(item.created, mtime)
        item.paths.add(rel)

    for rel, (size, mtime) in files.items():
        parts = rel.split("/")
        if parts[0] == RESULTS:
            match = RECORD.match(parts[-1])
            if match:
                add("records", match["stage"], match["key"], rel, size, mtime)
            continue
        if len(parts) < 3 or parts[0].startswith("."):
            continue
        stage, second = parts[0], parts[1]
        if second == ".work":
            add("work", stage, parts[2], f"{stage}/.work/{parts[2]}", size, mtime)
        elif second.startswith(".tmp-"):
            add("uncommitted", stage, second.removeprefix(".tmp-").rsplit("-", 1)[0], f"{stage}/{second}", size, mtime)
        elif second.startswith("."):  # .corrupt-<key>-..., .replaced-<key>-...
            add("aside", stage, second.split("-")[1] if "-" in second else second, f"{stage}/{second}", size, mtime)
        elif (stage, second) in committed:
            manifest = committed[(stage, second)]
            if remote and parts[2] != MANIFEST and parts[2] != content_id(manifest):
                add("uncommitted", stage, second, f"{stage}/{second}/{parts[2]}", size, mtime)  # a stale or partial upload
            else:
                add("artifact", stage, second, f"{stage}/{second}", size, mtime)
        else:
            where = f"{stage}/{second}/{parts[2]}" if remote else f"{stage}/{second}"
            add("uncommitted", stage, second, where, size, mtime)
    for (stage, key), manifest in committed.items():
        item = items.setdefault(("artifact", stage, key), Item("artifact", stage, key, paths={f"{stage}/{key}"}))
        item.created = float(manifest.get("created_at") or item.created)
        item.state = "incomplete" if manifest.get(INCOMPLETE) else "final"
        item.title = str(manifest.get("title") or stage)
        item.upstream = {str(k): str(v) for k, v in (manifest.get("upstream") or {}).items()}
    artifacts = {(i.stage, i.key): i for i in items.values() if i.kind == "artifact"}
    for item in artifacts.values():
        for up_stage, up_key in item.upstream.items():
            if (up_stage, up_key) in artifacts:
                artifacts[(up_stage, up_key)].used_by.append(item.name)
    if isinstance(store, RemoteStore):
        for item in _stale_local_copies(store, committed):
            items[(item.kind, item.stage, item.key + item.title)] = item
    order = {"artifact": 0, "work": 1, "uncommitted": 2, "aside": 3, "records": 4, "local copy": 5}
    return sorted(items.values(), key=lambda i: (order[i.kind], i.stage, i.created, i.key))


def _stale_local_copies(store: RemoteStore, committed: dict[tuple[str, str], dict[str, Any]]) -> list[Item]:
    """This machine's copies (``<local>/remote/<store>/<stage>/<key>/<content id>``) that the store no longer names."""
    out: list[Item] = []
    if not store.root.is_dir():
        return out
    for stage_dir in store.root.iterdir():
        if not stage_dir.is_dir():
            continue
        for key_dir in stage_dir.iterdir():
            if key_dir.name.startswith(".") or not key_dir.is_dir():
                continue
            manifest = committed.get((stage_dir.name, key_dir.name))
            for copy in key_dir.iterdir():
                if manifest is not None and copy.name == content_id(manifest):
                    continue
                if copy.name.startswith(".tmp-"):
                    pid = copy.name.rsplit("-", 1)[-1]
                    if pid.isdigit() and alive(int(pid)):
                        continue  # being downloaded right now
                size = sum(p.stat().st_size for p in copy.rglob("*") if p.is_file())
                out.append(Item("local copy", stage_dir.name, key_dir.name, size, copy.stat().st_mtime,
                                title=f" ({copy.name})", paths={str(copy)}))
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
    younger than ``grace_hours`` (a publication may be in progress). Everything else is removed.
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
        elif item.kind in ("uncommitted", "aside"):
            age_hours = (now - item.created) / 3600
            if age_hours < grace_hours:
                keep[label] = f"{age_hours:.1f} h old (under --grace-hours {grace_hours:g}: maybe still being published)"
            else:
                remove.append(item)
        else:  # local copy: the store no longer names it
            remove.append(item)
    return GcPlan(keep=keep, remove=remove)


def remove(store: ArtifactStore, items: Iterable[Item]) -> int:
    """Remove what ``plan_gc`` listed; returns the bytes freed. An artifact is uncommitted first (its
    manifest removed, or its directory renamed), so no reader takes a half-removed one for complete."""
    freed = 0
    for item in items:
        if item.kind == "local copy":
            for path in item.paths:
                shutil.rmtree(path, ignore_errors=True)
        elif isinstance(store, RemoteStore):
            if item.kind == "artifact":
                store.objects.delete([f"{item.stage}/{item.key}/{MANIFEST}"])  # uncommitted from here on
                shutil.rmtree(store.root / item.stage / item.key, ignore_errors=True)  # and this machine's copy
            for rel in sorted(item.paths):
                files = store.objects.list_files(rel)
                if files:
                    store.objects.delete(f"{rel}/{name}" for name in files)
                else:
                    store.objects.delete([rel])  # a single object (a record, a moved-aside manifest)
        else:
            for rel in sorted(item.paths):
                target = store.root / rel
                if item.kind == "artifact" and target.is_dir():
                    doomed = target.with_name(f".gc-{target.name}-{os.getpid()}")
                    target.rename(doomed)  # gone for readers at once; then removed
                    shutil.rmtree(doomed, ignore_errors=True)
                elif target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink(missing_ok=True)
        freed += item.size
        log.info("removed %s %s (%d bytes)", item.kind, item.name, item.size)
    return freed
