"""A sharded tag stage (``tag.shards`` > 1) in the ``nuner`` flow: each shard a run of its own, then the merge.

Each shard is a ``tag-shard`` task whose child is a ``nuner`` run of the tag stage alone with
``tag.shard`` set (``nuner_core.tagging.shards`` says which documents it holds): in this process
(a subflow; the shards in turn), or, with ``deployment`` (``nuner/tag``), a run of that deployment
on its pool's workers (all submitted at once: as many run at a time as there are free workers).
The task caches like a stage task (``tasks.common.ArtifactCache``: on the shard's key, in this
store, refreshed when its artifact is not there), so a shard already done is ``Cached`` and a
rerun after a failure runs the failed shards only. Then the sharded run's tag stage gets the
shards' artifacts as inputs and merges them in input order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, cast

from prefect import State, get_run_logger, task
from prefect.client.schemas.objects import FlowRun
from prefect.runtime import task_run
from prefect.states import Failed

from nuner_core.pipeline import PlannedStage, plan
from nuner_core.store import ArtifactRef, ArtifactStore, open_store
from nuner_core.tagging.config import TagConfig
from nuner_core.tagging.shards import input_name
from tasks.common import STAGE_TASK_OPTIONS, StageTaskOptions, debug, result_storage


def sharded(step: PlannedStage) -> bool:
    """Whether this is the tag stage of a sharded run (not one of its shard runs)."""
    cfg = step.stage_config
    return isinstance(cfg, TagConfig) and cfg.shards > 1 and cfg.shard is None


def shard_steps(step: PlannedStage, store: ArtifactStore) -> list[PlannedStage]:
    """Each shard's tag stage, planned as its own run will plan it (same config but ``tag.shard``, same store)."""
    config = step.config
    steps = []
    for index in range(config.tag.shards):
        shard_config = config.model_copy(update={"tag": config.tag.model_copy(update={"shard": index})})
        steps += plan(shard_config, ["tag"], store)
    return steps


def _shard_name() -> str:
    cfg = task_run.parameters["step"].config.tag
    return f"tag shard {cfg.shard + 1} of {cfg.shards}"


# Cached like a stage task (on the shard's artifact key and store), under its own name.
SHARD_TASK_OPTIONS: StageTaskOptions = {**STAGE_TASK_OPTIONS, "task_run_name": _shard_name}


@task(name="tag-shard", **SHARD_TASK_OPTIONS)
def tag_shard(step: PlannedStage, store_root: str, profile: str, overrides: dict[str, Any], deployment: str | None) -> ArtifactRef | State[Any]:
    """One shard: the ``nuner`` flow on the tag stage with ``tag.shard`` set, here or as a run of ``deployment``; its artifact."""
    parameters: dict[str, Any] = {"profile": profile, "overrides": {**overrides, "tag.shard": step.config.tag.shard}, "stages": ["tag"]}
    try:
        if deployment:
            from prefect.deployments import run_deployment

            # Called from a worker thread, not a coroutine: it waits and returns the flow run.
            state = cast(FlowRun, run_deployment(deployment, parameters=parameters, timeout=None, poll_interval=2)).state
        else:
            from flows.pipeline import nuner

            state = nuner(**parameters, return_state=True)
    except Exception as exc:  # a missing deployment, a crash: this shard fails, the others go on
        if debug():
            raise
        return Failed(message=f"{type(exc).__name__}: {exc}")
    if state is None or not state.is_completed():
        return Failed(message=(state.message if state is not None and state.message else f"ended {getattr(state, 'name', 'without a state')}"))
    ref = open_store(store_root).lookup("tag", step.key, fetch=False)
    if ref is None:
        return Failed(message=f"its run completed but its artifact tag/{step.key} is not in {store_root}: "
                      "do the workers write to another artifact store (NUNER_DATA_DIR)?")
    return ref


@dataclass
class ShardOutcome:
    step: PlannedStage  # the sharded tag stage, with the shards' artifacts among its inputs
    summary: dict[str, dict[str, str]] = field(default_factory=dict)  # per shard, as the flow's summary per stage
    failure: str | None = None  # which shards failed and why; None: all done


def run_shards(step: PlannedStage, store: ArtifactStore, profile: str, overrides: dict[str, Any], deployment: str | None) -> ShardOutcome:
    """Every shard of ``step`` done (run, or Cached), in turn or on ``deployment``'s workers; what the merge needs."""
    logger = get_run_logger()
    shards = shard_steps(step, store)

    def options(shard: PlannedStage) -> Any:
        return tag_shard.with_options(result_storage=result_storage(store), refresh_cache=not store.is_final("tag", shard.key))

    args = (store.location, profile, overrides, deployment)
    if deployment:
        futures = [options(s).submit(s, *args) for s in shards]
        for future in futures:
            future.wait()
        states = [future.state for future in futures]
    else:
        states = [options(s)(s, *args, return_state=True) for s in shards]
    outcome = ShardOutcome(step)
    inputs, failed = dict(step.inputs), []
    for index, (shard, state) in enumerate(zip(shards, states)):
        name = f"tag shard {index + 1} of {len(shards)}"
        if state.is_failed() or not state.is_completed():
            failed.append(f"{name}: {state.message or state.name}")
            outcome.summary[name] = {"state": str(state.name), "key": shard.key, "path": ""}
            continue
        ref = store.here(state.result())  # a Cached record may have been written by another machine
        inputs[input_name(index)] = ref
        outcome.summary[name] = {"state": str(state.name), "key": ref.key, "path": ref.location}
        logger.info("%s: %s -> %s", name, state.name, ref.location)
    if failed:
        outcome.failure = (f"{len(failed)} of {len(shards)} tag shards failed ({'; '.join(failed)}); "
                           "rerun to finish: the shards done are Cached")
    outcome.step = replace(step, inputs=inputs)
    return outcome
