"""The ``nuner`` flow: the whole pipeline, or any subset of its stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import State, flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Failed

from flows.shards import run_shards, sharded
from nuner_core.config import ConfigError, load_config
from nuner_core.pipeline import plan
from nuner_core.stage_api import StageError
from nuner_core.store import ArtifactError, ArtifactRef, open_store
from tasks.common import debug, result_storage
from tasks.stages import STAGE_TASKS


def _run_name() -> str:
    """What a run does, for the UI: ``nuner · demo · all 5 stages · 200 sentences · 3 overrides``.

    The stage tasks carry the size of their own work (``annotate · 1,662 sentences · offline``).
    """
    params = flow_run.parameters
    profile = params.get("profile") or "demo"
    overrides = params.get("overrides") or {}
    stages = params.get("stages")
    parts = ["nuner", Path(str(profile)).stem, ", ".join(stages) if stages else "all stages"]
    if not stages or set(stages) - {"evaluate"}:  # the corpus size is the work size up to pre-training
        try:
            sentences = load_config(profile, overrides).corpus.num_sentences
            parts.append(f"{sentences:,} sentences" if sentences else "all sentences")
        except (ConfigError, ValueError, OSError):
            pass  # the flow reports a bad profile or override itself, with its source
    if overrides:
        parts.append(f"{len(overrides)} override{'s' if len(overrides) != 1 else ''}")
    return " · ".join(parts)


@flow(name="nuner", flow_run_name=_run_name, log_prints=True)
def nuner(
    profile: str = "demo",
    overrides: dict[str, Any] | None = None,
    stages: list[str] | None = None,
    deployment: str | None = None,
) -> dict[str, dict[str, str]] | State:
    """Run the NuNER pipeline (or the listed stages) on a profile plus dotted overrides.

    With ``tag.shards`` > 1 each shard of the tag stage is a run of its own (``flows/shards.py``):
    in turn in this process, or as runs of ``deployment`` (``nuner/tag``) on its pool's workers.

    Returns, per stage, the artifact key and path and whether it was ``Cached``. A stage that
    fails with a ``StageError`` ends the run in a Failed state carrying its message.
    """
    logger = get_run_logger()
    try:
        store = open_store()  # $NUNER_DATA_DIR: a directory or an object-store URL
        config = load_config(profile, overrides, overrides_source="flow parameter overrides")
        steps = plan(config, stages, store)
    except (ConfigError, StageError, ArtifactError) as exc:  # the user's to fix: one message, no traceback
        if debug():
            raise
        logger.error("%s", exc)
        return Failed(message=str(exc))
    built: dict[str, ArtifactRef] = {}
    summary: dict[str, dict[str, str]] = {}
    for step in steps:
        try:
            final = store.is_final(step.stage, step.key)
        except ArtifactError as exc:  # the store cannot be reached: one message
            logger.error("%s", exc)
            return Failed(message=str(exc))
        if not final and sharded(step):  # its shards first (each a run, Cached when done), then the merge
            shards = run_shards(step, store, profile, overrides or {}, deployment)
            summary.update(shards.summary)
            if shards.failure:
                logger.error("%s", shards.failure)
                return Failed(message=shards.failure)
            step = shards.step
        task = STAGE_TASKS[step.stage].with_options(result_storage=result_storage(store), refresh_cache=not final)
        state = task(step, built, store.location, return_state=True)
        if state.is_failed():  # a StageError, already logged by the task: the run ends here, with its message
            return Failed(message=state.message)
        result = state.result()
        assert isinstance(result, ArtifactRef)  # a stage task returns its artifact, or a Failed state (handled above)
        assert state.name is not None  # Prefect names every state after its type when not named otherwise
        ref = store.here(result)  # a Cached record may have been written by another machine
        built[step.stage] = ref
        summary[step.stage] = {"state": state.name, "key": ref.key, "path": ref.location}
        logger.info("%s: %s -> %s", step.stage, state.name, ref.location)
    rows = [{"stage": stage, **info} for stage, info in summary.items()]
    create_table_artifact(rows, key="nuner-run", description="Each stage of this run: Completed or Cached, and its artifact")
    return summary
