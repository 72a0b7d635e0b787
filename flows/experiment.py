"""The ``experiment`` flow: a sweep of overrides, each point the ``nuner`` flow as a subflow.

1. Read and validate the experiment file; plan every point (its stages' artifact keys).
2. Points whose evaluate artifact exists are done: a rerun runs only what is missing.
3. With points running concurrently, the stages two of them share (corpus, annotate, ...)
   are built first, once, so that concurrent points find them ``Cached``.
4. The points, ``max_parallel`` at once, each in a ``point`` task whose child is the
   ``nuner`` flow run of that point: in this process (a subflow), or, with ``deployment``,
   as a run of that deployment (``nuner/full-pipeline``) picked up by the pool's workers,
   one point per worker when each worker runs one flow at a time (``--limit 1``).
5. Collate, publish the ``experiment`` artifact, show its table and figure in the UI.

A failed point does not stop the others; the artifact is then published *incomplete*,
the summary says which point failed and why, and the run ends Failed with that message.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run, task_run
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from nuner_core.config import ConfigError
from nuner_core.experiment.collate import PointOutcome
from nuner_core.experiment.runner import default_parallel, done_points, existing, point_keys, publish, shared_stages
from nuner_core.experiment.spec import Experiment, ExperimentError, Point, load_experiment
from nuner_core.stage_api import StageError
from nuner_core.store import ArtifactStore, open_store
from tasks.common import debug, publish_reports

MAX_THREADS = 64  # the task runner's ceiling; max_parallel is enforced by the flow itself


def _run_name() -> str:
    """``experiment · concept-diversity-demo · 5 points`` (or the file name when it does not load)."""
    params = flow_run.parameters
    try:
        exp = load_experiment(params["file"])
        return f"experiment · {exp.spec.name} · {len(exp.points)} points"
    except (ExperimentError, ConfigError, KeyError):
        return f"experiment · {Path(str(params.get('file', '?'))).stem}"


def _point_name() -> str:
    params = task_run.parameters
    return str(params.get("title") or "point")


@task(name="point", task_run_name=_point_name, cache_policy=NO_CACHE)
def run_point(title: str, profile: str, overrides: dict[str, Any], stages: list[str] | None, deployment: str | None) -> dict[str, Any]:
    """One point's pipeline: the ``nuner`` flow as a subflow, or a run of ``deployment`` on a worker."""
    started = time.time()
    try:
        if deployment:
            from prefect.deployments import run_deployment

            parameters: dict[str, Any] = {"profile": profile, "overrides": overrides}
            if stages:
                parameters["stages"] = stages
            run = run_deployment(deployment, parameters=parameters, timeout=None, poll_interval=2)
            state, run_id = run.state, str(run.id)
        else:
            from flows.pipeline import nuner

            state = nuner(profile=profile, overrides=overrides, stages=stages, return_state=True)
            run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
    except Exception as exc:  # the point fails, the experiment goes on (a missing deployment, a crash)
        if debug():
            raise
        get_run_logger().error("%s failed: %s: %s", title, type(exc).__name__, exc)
        return {"ok": False, "message": f"{type(exc).__name__}: {exc}", "seconds": time.time() - started, "flow_run": None}
    ok = state is not None and state.is_completed()
    message = "" if ok else (state.message if state is not None and state.message else f"ended {getattr(state, 'name', 'without a state')}")
    return {"ok": ok, "message": message, "seconds": time.time() - started, "flow_run": run_id}


# Named "nuner" like the pipeline flow, so that its deployment is `nuner/experiment` beside
# `nuner/full-pipeline`; its runs are told apart by their names (`experiment · <name> · N points`).
@flow(name="nuner", flow_run_name=_run_name, log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=MAX_THREADS))
def experiment(file: str, max_parallel: int | None = None, deployment: str | None = None) -> dict[str, Any] | State:
    """Run an experiment file: every point's pipeline, shared stages once, then the collated artifact.

    ``max_parallel`` (else the file's, else 1 without a GPU) caps the points running at once;
    ``deployment`` (e.g. ``nuner/full-pipeline``) runs each point as a run of that deployment
    on its work pool's workers instead of in this process.
    """
    logger = get_run_logger()
    started = time.time()
    store = open_store()
    try:
        exp = load_experiment(file)
        keys = {p.index: point_keys(exp, p, store) for p in exp.points}
    except (ExperimentError, ConfigError, StageError) as exc:
        if debug():
            raise
        logger.error("%s", exc)
        return Failed(message=str(exc))

    ref = existing(exp, keys, store)
    if ref is not None:
        logger.info("experiment %s: all %d points done, artifact %s (Cached)", exp.spec.name, len(exp.points), ref.path)
        publish_reports(ref)
        return {"state": "Cached", "artifact": ref.path, "key": ref.key, "ran": [], "failed": []}

    done = done_points(keys, store)
    todo = [p for p in exp.points if p.index not in done]
    parallel = max_parallel or exp.spec.max_parallel or default_parallel()
    logger.info(
        "experiment %s: %d points, %d done already, %d to run, %d at once%s",
        exp.spec.name, len(exp.points), len(done), len(todo), parallel, f" as runs of {deployment}" if deployment else "",
    )  # fmt: skip
    outcomes: dict[int, PointOutcome] = {}
    for p in exp.points:
        if p.index in done:
            found = store.lookup("evaluate", keys[p.index]["evaluate"])
            outcomes[p.index] = PointOutcome(p, "reused", keys[p.index], found.path if found else None)

    # Shared stages first, once each, when points will run side by side.
    if parallel > 1 and len(todo) > 1:
        for build in shared_stages(todo, keys, store):
            title = f"shared · {', '.join(build.stages)} · for points {', '.join(map(str, build.shared_by))}"
            result = run_point(title, exp.profile, build.point.overrides, list(build.stages), deployment)
            if not result["ok"]:
                for i in build.shared_by:
                    if i not in outcomes:
                        p = exp.points[i]
                        outcomes[i] = PointOutcome(p, "failed", keys[i], message=f"shared stages {', '.join(build.stages)}: {result['message']}")

    queue = [p for p in todo if p.index not in outcomes]
    inflight: dict[Any, Point] = {}
    while queue or inflight:
        while queue and len(inflight) < parallel:
            p = queue.pop(0)
            future = run_point.submit(_title(exp, p), exp.profile, p.overrides, None, deployment)
            inflight[future] = p
        future = next(as_completed(list(inflight)))
        p = inflight.pop(future)
        result = future.result()
        outcomes[p.index] = _outcome(exp, p, keys[p.index], result, store)
        logger.info("point %d (%s): %s%s", p.index, p.label, outcomes[p.index].status, f": {outcomes[p.index].message}" if outcomes[p.index].message else "")

    ordered = [outcomes[p.index] for p in exp.points]
    ref = publish(exp, ordered, keys, store, started)
    publish_reports(ref)
    failed = [o for o in ordered if o.status == "failed"]
    summary = {
        "state": "Completed" if not failed else "Failed",
        "artifact": ref.path,
        "key": ref.key,
        "ran": [o.point.index for o in ordered if o.status == "built"],
        "failed": [o.point.index for o in failed],
    }
    logger.info("experiment %s: artifact %s", exp.spec.name, ref.path)
    if failed:
        why = "; ".join(f"point {o.point.index} ({o.point.label}): {o.message.splitlines()[0] if o.message else 'failed'}" for o in failed)
        return Failed(message=f"{len(failed)} of {len(ordered)} points failed ({why}); the others are in {ref.path}; rerun to finish", data=summary)
    return summary


def _title(exp: Experiment, p: Point) -> str:
    return f"point {p.index} · {p.label}"


def _outcome(exp: Experiment, p: Point, keys: dict[str, str], result: dict[str, Any], store: ArtifactStore) -> PointOutcome:
    outcome = PointOutcome(p, "built", keys, seconds=result["seconds"], flow_run=result.get("flow_run"))
    if not result["ok"]:
        outcome.status, outcome.message = "failed", result["message"]
        return outcome
    found = store.lookup("evaluate", keys["evaluate"])
    if found is None:
        outcome.status = "failed"
        outcome.message = (
            f"its pipeline completed but its evaluate artifact {keys['evaluate']} is not in {store.root}: "
            "do the workers write to another artifact store (NUNER_DATA_DIR)?"
        )
        return outcome
    outcome.evaluate_dir = found.path
    return outcome
