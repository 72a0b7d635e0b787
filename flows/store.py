"""``nuner store ls|du|gc``: what the artifact store holds, its size, and removing what nothing needs.

The store is ``$NUNER_DATA_DIR`` (a directory or an object-store URL), or ``--store``. The
library part is ``nuner_core.store.inventory``; this module parses arguments, turns the
profiles and experiment files a user names into the artifact keys they use (``gc`` keeps
those), and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def add_parser(sub: Any) -> None:
    """The ``store`` subcommand, on the ``nuner`` parser's subparsers."""
    store = sub.add_parser("store", help="what the artifact store holds (ls, du) and removing what nothing uses (gc)")
    store.add_argument("--store", help="a directory or an object-store URL (default: $NUNER_DATA_DIR, else data/)")
    actions = store.add_subparsers(dest="store_command", required=True)
    ls = actions.add_parser("ls", help="every artifact: stage, key, size, created, state, how many artifacts use it")
    ls.add_argument("--stage", help="only this stage")
    ls.add_argument("--all", action="store_true", help="also resumable work, unfinished publications, Prefect records, unknown files")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    du = actions.add_parser("du", help="sizes per stage and kind")
    du.add_argument("--json", action="store_true")
    gc = actions.add_parser("gc", help="remove what no recent run, config or experiment uses (a dry run unless --delete)")
    gc.add_argument("--keep-days", type=float, default=14.0, help="keep artifacts created in the last N days (default 14)")
    gc.add_argument("--grace-hours", type=float, default=24.0, help="keep unfinished publications younger than this (default 24)")
    gc.add_argument("--profile", action="append", default=[], help="keep what this profile builds (repeatable; with --set)")
    gc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for every --profile")
    gc.add_argument("--experiment", action="append", default=[], help="keep what every point of this experiment file uses (repeatable)")
    gc.add_argument("--delete", action="store_true", help="remove them (without it: only say what would go)")
    store.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from nuner_core.config import ConfigError
    from nuner_core.experiment.spec import ExperimentError
    from nuner_core.registry import STAGE_NAMES
    from nuner_core.stage_api import StageError
    from nuner_core.store import ArtifactError, inventory, open_store

    try:
        store = open_store(args.store or None)
        if args.store_command == "gc":
            wanted = _wanted_keys(args, store)  # first: a bad profile fails before anything is listed
        items = inventory.scan(store, STAGE_NAMES)
    except (ArtifactError, ConfigError, StageError, ExperimentError) as exc:
        print(f"nuner store: {exc}", file=sys.stderr)
        return 1
    if args.store_command == "ls":
        return _ls(store, items, args)
    if args.store_command == "du":
        return _du(store, items, args)
    plan = inventory.plan_gc(items, wanted=wanted, keep_days=args.keep_days, grace_hours=args.grace_hours, now=store.clock())
    print(f"store {store.location}")
    for label, why in sorted(plan.keep.items()):
        print(f"  keep    {label}: {why}")
    for item in plan.remove:
        print(f"  {'remove' if args.delete else 'would remove'}  {item.kind} {item.name}{item.title if item.kind == 'local copy' else ''}  {_size(item.size)}")
    if not plan.remove:
        print("nothing to remove")
        return 0
    if not args.delete:
        print(f"{len(plan.remove)} item(s), {_size(plan.size)}: a dry run; `nuner store gc --delete` (same options) removes them")
        return 0
    try:
        removed = inventory.remove(store, plan.remove)
    except ArtifactError as exc:
        print(f"nuner store: {exc}", file=sys.stderr)
        return 1
    gone = {id(item) for item in removed}
    for item in plan.remove:
        if id(item) not in gone:
            print(f"  kept    {item.kind} {item.name}: changed since the scan, or its process now runs")
    print(f"removed {len(removed)} item(s), {_size(sum(item.size for item in removed))}")
    return 0


def _wanted_keys(args: argparse.Namespace, store: Any) -> set[tuple[str, str]]:
    """(stage, key) of every artifact the given profiles and experiment files use."""
    from nuner_core.config import load_config, parse_overrides
    from nuner_core.pipeline import plan

    wanted: set[tuple[str, str]] = set()
    overrides = parse_overrides(args.set)
    for profile in args.profile:
        wanted |= {(step.stage, step.key) for step in plan(load_config(profile, overrides), None, store)}
    if args.experiment:
        from nuner_core.experiment.runner import point_keys
        from nuner_core.experiment.spec import load_experiment

        for file in args.experiment:
            experiment = load_experiment(file)
            for point in experiment.points:
                wanted |= set(point_keys(experiment, point, store).items())
    return wanted


def _ls(store: Any, items: list[Any], args: argparse.Namespace) -> int:
    shown = [i for i in items if (args.all or i.kind == "artifact") and (not args.stage or i.stage == args.stage)]
    if args.json:
        for item in shown:
            print(json.dumps(item.as_dict()))
        return 0
    print(f"store {store.location}")
    if not shown:
        print("no artifacts" + (f" of stage {args.stage}" if args.stage else ""))
        return 0
    rows = [
        (i.stage, i.key, _size(i.size), _when(i.created), i.state or i.kind, str(len(i.used_by)) if i.kind == "artifact" else "", i.title)
        for i in shown
    ]
    header = ("stage", "key", "size", "created", "state", "used by", "title")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + "  " + row[-1])
    return 0


def _du(store: Any, items: list[Any], args: argparse.Namespace) -> int:
    totals: dict[str, dict[str, list[int]]] = {}
    for item in items:
        cell = totals.setdefault(item.stage, {}).setdefault(item.kind, [0, 0])
        cell[0] += 1
        cell[1] += item.size
    if args.json:
        print(json.dumps({stage: {kind: {"count": c, "bytes": b} for kind, (c, b) in kinds.items()} for stage, kinds in totals.items()}))
        return 0
    kinds = ["artifact", "work", "uncommitted", "aside", "records", "local copy", "unknown"]
    present = [k for k in kinds if any(k in v for v in totals.values())]
    print(f"store {store.location}")
    header = ["stage", *present, "total"]
    rows = []
    for stage, by_kind in sorted(totals.items()):
        cells = [f"{by_kind[k][0]} · {_size(by_kind[k][1])}" if k in by_kind else "-" for k in present]
        rows.append([stage, *cells, _size(sum(b for _, b in by_kind.values()))])
    rows.append(["total", *[_size(sum(v[k][1] for v in totals.values() if k in v)) for k in present],
                 _size(sum(b for v in totals.values() for _, b in v.values()))])
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)))
    return 0


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "?"


def import_saved_answers(args: argparse.Namespace) -> int:
    """``nuner cache import --artifact KEY`` / ``nuner cache import response-cache.parquet``: answers saved with an
    annotate artifact, imported into this machine's response cache under their own keys (never replacing one)."""
    from pathlib import Path

    from nuner_core.annotation.cache import ResponseCache
    from nuner_core.annotation.cache_import import resolve_cache_dir
    from nuner_core.annotation.cache_sync import ARTIFACT_FILE, import_segment
    from nuner_core.config import ConfigError, load_config
    from nuner_core.stage_api import StageError
    from nuner_core.store import ArtifactError, open_store

    try:
        store = open_store()
        if args.artifact:
            ref = store.lookup("annotate", args.artifact)
            if ref is None:
                raise StageError(f"no annotate artifact {args.artifact} in {store.location} (see: nuner store ls --stage annotate)")
            path = ref.dir / ARTIFACT_FILE
            if not path.is_file():
                raise StageError(f"the annotate artifact {args.artifact} has no {ARTIFACT_FILE} (it was built before answers were saved with it)")
        else:
            path = Path(args.file)
            if not path.is_file():
                raise StageError(f"no such file: {path}")
        cache_dir = resolve_cache_dir(load_config(args.profile, args.set).annotate, store.cache_dir)
        with ResponseCache(cache_dir) as cache:
            stats = import_segment(cache, path)
        if args.overwrite:
            print("nuner cache import: --overwrite does not apply to saved answers: they never replace a cached one", file=sys.stderr)
    except (ArtifactError, ConfigError, StageError) as exc:
        print(f"nuner cache import: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"file": str(path), "cache": str(cache_dir), **stats.as_dict()}, indent=2))
    return 0
