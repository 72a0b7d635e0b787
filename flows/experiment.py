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

What is decided is in ``nuner_core/experiment/`` (``scheduler``: steps 1 to 4, ``runner``:
step 5); this module gives it Prefect: the ``point`` task and the launcher that submits it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence, cast

from prefect import State, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run, task_run
from prefect.states import Failed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from nuner_core.annotation.config import hand_over
from nuner_core.config import ConfigError
from nuner_core.experiment.runner import existing, publish
from nuner_core.experiment.scheduler import PointJob, PointResult, cached, ending, plan_experiment, run_points
from nuner_core.experiment.spec import ExperimentError, load_experiment
from nuner_core.redaction import safe_message
from nuner_core.stage_api import StageError
from nuner_core.store import open_store
from tasks.common import debug, publish_reports

MAX_THREADS = 64  # the task runner's ceiling; max_parallel is enforced by the scheduler
# The flow decorator types its runner as TaskRunner[PrefectFuture] (invariant), which no concrete runner is:
# Prefect casts the same way inside Flow.__init__.
TASK_RUNNER = cast("TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner(max_workers=MAX_THREADS))


def _run_name() -> str:
    """``experiment · concept-diversity-demo · 5 points`` (or the file name when it does not load)."""
    params = flow_run.parameters
    try:
        exp = load_experiment(params["file"], params.get("max_points"))
        return f"experiment · {exp.spec.name} · {len(exp.points)} points"
    except (ExperimentError, ConfigError, KeyError):
        return f"experiment · {Path(str(params.get('file', '?'))).stem}"


def _point_name() -> str:
    return str(task_run.parameters["job"].title)


@task(name="point", task_run_name=_point_name, cache_policy=NO_CACHE)
def run_point(job: PointJob, profile: str, deployment: str | None) -> PointResult:
    """One pipeline run: the ``nuner`` flow as a subflow, or a run of ``deployment`` on a worker."""
    started = time.time()
    run_id: str | None
    try:
        if deployment:
            from prefect.deployments import run_deployment

            parameters: dict[str, Any] = {"profile": profile, "overrides": job.overrides}
            if job.stages:
                parameters["stages"] = list(job.stages)
            # Called from a worker thread, not a coroutine: it waits and returns the flow run.
            run = cast(FlowRun, run_deployment(deployment, parameters=parameters, timeout=None, poll_interval=2))
            state, run_id = run.state, str(run.id)
        else:
            from flows.pipeline import nuner

            state = nuner(profile=profile, overrides=job.overrides, stages=list(job.stages) if job.stages else None, return_state=True)
            run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
    except Exception as exc:  # the point fails, the experiment goes on (a missing deployment, a crash)
        if debug():
            raise
        get_run_logger().error("%s failed: %s: %s", job.title, type(exc).__name__, exc)
        return PointResult(False, f"{type(exc).__name__}: {exc}", time.time() - started)
    ok = state is not None and state.is_completed()
    message = "" if ok else (state.message if state is not None and state.message else f"ended {getattr(state, 'name', 'without a state')}")
    return PointResult(ok, message, time.time() - started, run_id)


class _PointTasks:
    """The scheduler's launcher: each job a ``point`` task of this flow run, on its thread pool."""

    def __init__(self, profile: str, deployment: str | None):
        self.profile, self.deployment = profile, deployment

    def submit(self, job: PointJob) -> PrefectFuture[PointResult]:
        return run_point.submit(job, self.profile, self.deployment)

    def first_done(self, running: Sequence[PrefectFuture[PointResult]]) -> tuple[PrefectFuture[PointResult], PointResult]:
        future = next(as_completed(list(running)))
        return future, future.result()


# Named "nuner" like the pipeline flow, so that its deployment is `nuner/experiment` beside
# `nuner/full-pipeline`; its runs are told apart by their names (`experiment · <name> · N points`).
@flow(name="nuner", flow_run_name=_run_name, log_prints=True, task_runner=TASK_RUNNER)
def experiment(
    file: str, max_parallel: int | None = None, deployment: str | None = None, max_points: int | None = None
) -> dict[str, Any] | State:
    """Run an experiment file: every point's pipeline, shared stages once, then the collated artifact.

    ``max_parallel`` (else the file's, else 1 without a GPU) caps the points running at once;
    ``deployment`` (e.g. ``nuner/full-pipeline``) runs each point as a run of that deployment
    on its work pool's workers instead of in this process; ``max_points`` (default 1,000)
    refuses a file of more points.
    """
    logger = get_run_logger()
    started = time.time()
    store = open_store()
    try:  # 1. the file and every point's keys; an LLM's URL credentials reach the points outside their parameters
        plan = plan_experiment(file, store, max_points)
        hand_over(plan.experiment.endpoints(deployment))
    except (ExperimentError, ConfigError, StageError) as exc:
        if debug():
            raise
        message = safe_message(str(exc))
        logger.error("%s", message)
        return Failed(message=message)
    exp = plan.experiment

    ref = existing(exp, plan.keys, store)  # 2. every point done, and collated
    if ref is not None:
        logger.info("experiment %s: all %d points done, artifact %s (Cached)", exp.spec.name, len(exp.points), ref.path)
        publish_reports(ref)
        return cached(ref)

    parallel = plan.parallel(max_parallel)  # 3. and 4. shared stages once, then the points
    logger.info(
        "experiment %s: %d points, %d done already, %d to run, %d at once%s",
        exp.spec.name, len(exp.points), len(plan.done), len(plan.todo), parallel, f" as runs of {deployment}" if deployment else "",
    )  # fmt: skip
    outcomes = run_points(plan, store, parallel, _PointTasks(exp.profile, deployment), logger.info)

    ref = publish(exp, outcomes, plan.keys, store, started)  # 5. the experiment artifact
    publish_reports(ref)
    logger.info("experiment %s: artifact %s", exp.spec.name, ref.path)
    end = ending(outcomes, ref)
    return Failed(message=end.failure, data=end.summary) if end.failure else end.summary
