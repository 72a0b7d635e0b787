"""What every stage task shares: the artifact cache policy, Prefect progress and reports."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypedDict

from prefect import State, get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import CachePolicy
from prefect.filesystems import RemoteFileSystem, WritableFileSystem
from prefect.runtime import task_run
from prefect.serializers import Serializer
from prefect.states import Failed

from nuner_core.pipeline import PlannedStage, run_stage
from nuner_core.pipeline import title as stage_title
from nuner_core.progress_bar import BarProgress, TeeProgress
from nuner_core.stage_api import LogProgress, Progress, StageError
from nuner_core.store import ArtifactError, ArtifactRef, ArtifactStore, open_store
from tasks.records import SERIALIZER as RECORD_SERIALIZER
from tasks.records import check_record
from tasks.sync import sync_result

MAX_INLINE_IMAGE_BYTES = 2_000_000  # larger plots are linked by path instead of inlined


@dataclass
class ArtifactCache(CachePolicy):
    """Cache on the artifact's key, in the store the run writes to.

    The flow pairs it with ``refresh_cache`` set whenever the artifact is *not* in the
    store, so a deleted artifact is rebuilt instead of a stale cached path being returned
    (what Prefect's INPUTS policy would do).
    """

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        step: PlannedStage = inputs["step"]
        root_hash = hashlib.sha256(str(inputs["store_root"]).encode()).hexdigest()[:8]
        record_key = f"nuner-{step.stage}-{step.key}-{root_hash}"
        check_record(open_store(inputs["store_root"]), record_key, step.stage, step.key)  # before Prefect decodes it
        return record_key


_RESULT_STORAGE: dict[str, RemoteFileSystem] = {}


def result_storage(store: ArtifactStore) -> Path | WritableFileSystem:
    """Where Prefect keeps the stage tasks' cache records: ``.prefect-results`` in the artifact store itself.

    So the records go where the artifacts go: a fresh worker with an empty disk sees the
    stages another worker finished as ``Cached``, and a wiped Prefect database loses no work.
    On object storage it is a ``RemoteFileSystem`` block, saved on the Prefect server under
    ``nuner-results-<hash of the URL>`` (Prefect 3.8 takes a saved block or a local path, and a
    record names the block it was written to, so any worker can read it back). The block holds
    the URL and no credential: each worker's backend finds its own in its environment, so
    nothing secret reaches the Prefect database. Listings are not cached: other workers write there.
    """
    if not store.remote:
        return store.root / ".prefect-results"
    url = f"{store.location}/.prefect-results"
    if url not in _RESULT_STORAGE:  # one block per URL and process: loaded (or saved) once
        name = "nuner-results-" + hashlib.sha256(url.encode()).hexdigest()[:12]
        wanted = RemoteFileSystem(basepath=url, settings={"use_listings_cache": False})
        try:
            block: RemoteFileSystem | None = sync_result(RemoteFileSystem.load(name))
        except ValueError:  # not saved yet on this server
            block = None
        if block is None or block.basepath != wanted.basepath or block.settings != wanted.settings:
            wanted.save(name, overwrite=True)
            block = sync_result(RemoteFileSystem.load(name))
        _RESULT_STORAGE[url] = block
    return _RESULT_STORAGE[url]


def stage_run_name() -> str:
    """Task-run name computed when the task starts, so it can count what upstream stages built."""
    params = task_run.parameters
    return stage_title(params["step"], params["built"])


class PrefectProgress(LogProgress):
    """A Prefect progress artifact plus a log line every few seconds."""

    def __init__(self, stage: str, every_s: float = 5.0):
        super().__init__(stage, every_s, logger=get_run_logger())
        self.artifact_id = sync_result(create_progress_artifact(progress=0.0, description=f"{stage} progress"))

    def emit(self, done: int, total: int | None, note: str) -> None:
        if total:
            update_progress_artifact(self.artifact_id, progress=min(100.0, 100.0 * done / total))
        super().emit(done, total, note)


def publish_reports(ref: ArtifactRef) -> None:
    """Show a stage's headline figures and reports (tables, markdown, images) in the Prefect UI."""
    manifest = ref.manifest()
    stage = ref.stage
    headline = manifest.get("headline") or {}
    rows = manifest.get("rows") or {}
    dropped = manifest.get("dropped") or {}
    lines = [f"### {manifest.get('title', stage)}", "", f"artifact `{ref.location}`", "", "| figure | value |", "| --- | --- |"]
    for name, value in {**rows, **headline}.items():
        lines.append(f"| {name} | {_fmt(value)} |")
    for reason, count in dropped.items():
        lines.append(f"| dropped: {reason} | {_fmt(count)} |")
    create_markdown_artifact("\n".join(lines), key=f"{stage}-summary", description=f"{stage}: headline figures")
    for report in manifest.get("reports", []):
        kind, key, title, content = report["kind"], report["key"], report["title"], report["content"]
        if kind == "markdown":
            create_markdown_artifact(content, key=key, description=title)
        elif kind == "table":
            create_table_artifact(content, key=key, description=title)
        elif kind == "image":
            path = ref.dir / content
            if not path.is_file():  # an artifact found on object storage and not fetched here: linked, not downloaded
                create_markdown_artifact(f"{title}: `{ref.location}/{content}`", key=key, description=title)
            elif path.stat().st_size <= MAX_INLINE_IMAGE_BYTES:
                url = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
                create_image_artifact(url, key=key, description=title)
            else:
                create_markdown_artifact(f"{title}: `{path}`", key=key, description=title)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def execute(step: PlannedStage, built: dict[str, ArtifactRef], store_root: str) -> ArtifactRef | State[Any]:
    # store_root: the store's location (a directory or an object-store URL), also part of the cache key
    """The body of every stage task: build (or reuse) the artifact, then show its reports.

    A ``StageError`` or ``ArtifactError`` (bad input, a budget stop, a damaged input artifact:
    something the user fixes or a rerun repairs) ends the task in a
    Failed state whose message is the error, logged once, without a traceback; anything else
    is a bug and raises with its traceback. ``NUNER_DEBUG=1`` (``nuner run --debug``) raises always.
    """
    store = open_store(store_root)  # a directory, or an object-store URL (the same store as the flow's)
    progress: Progress = PrefectProgress(step.stage)
    if sys.stderr.isatty():  # `nuner run` on a terminal also gets a progress bar
        progress = TeeProgress(progress, BarProgress(step.stage))
    try:
        ref = run_stage(step, built, store, progress)
    except (StageError, ArtifactError) as exc:
        if debug():
            raise
        get_run_logger().error("%s", exc)
        return Failed(message=f"{step.stage}: {exc}")
    publish_reports(ref)
    return ref


def debug() -> bool:
    return os.environ.get("NUNER_DEBUG", "") not in ("", "0")


class _NoEmptyTraceback(logging.Filter):
    """Prefect logs a task that returned a Failed state with ``exc_info=True`` and no exception
    in flight, which prints a stray ``NoneType: None``; the state's message says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is None:
            record.exc_info = None
        return True


logging.getLogger("prefect.task_runs").addFilter(_NoEmptyTraceback())


class StageTaskOptions(TypedDict):
    task_run_name: Callable[[], str]
    cache_policy: CachePolicy
    persist_result: bool
    result_serializer: Serializer[Any]


# The options every stage task shares: `@task(name="corpus", **STAGE_TASK_OPTIONS)`.
STAGE_TASK_OPTIONS = StageTaskOptions(task_run_name=stage_run_name, cache_policy=ArtifactCache(), persist_result=True,
                                      result_serializer=RECORD_SERIALIZER)  # plain JSON: see tasks/records.py
