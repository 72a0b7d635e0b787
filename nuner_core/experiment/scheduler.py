"""The experiment's schedule: which points run, the stages they share built first, then the points,
at most ``parallel`` at once, and how the run ends.

Prefect-free. The flow (``flows/experiment.py``) injects a ``Launcher``: it starts a ``PointJob``
(one pipeline run: a Prefect task whose child is the ``nuner`` flow run, in process or as a run of a
deployment on a worker) and waits for the first of the started ones to end. What is decided about
the points is decided here, the same whichever way they run, and testable without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Protocol, Sequence, TypeVar

from nuner_core.experiment.collate import PointOutcome
from nuner_core.experiment.runner import SharedBuild, default_parallel, done_points, point_keys, shared_stages
from nuner_core.experiment.spec import Experiment, Point, load_experiment
from nuner_core.store import ArtifactRef, ArtifactStore


@dataclass(frozen=True)
class PointJob:
    """One pipeline run to start: a point's whole pipeline, or the ``stages`` several points share."""

    title: str  # its name in the UI: ``point 1 · seed=1``, ``shared · corpus, annotate · for points 0, 1``
    overrides: dict[str, Any]  # the point's overrides of the experiment's profile
    stages: tuple[str, ...] | None = None  # None: the whole pipeline


@dataclass(frozen=True)
class PointResult:
    """How a pipeline run ended."""

    ok: bool
    message: str = ""  # why it did not complete
    seconds: float = 0.0  # from its start to its end, waiting for a worker included
    flow_run: str | None = None  # its Prefect flow run, when one was created


Handle = TypeVar("Handle", bound=Hashable)


class Launcher(Protocol[Handle]):
    """Starts pipeline runs and tells when one ends (the flow's: Prefect tasks and their futures)."""

    def submit(self, job: PointJob) -> Handle:
        """Start the job's pipeline run; do not wait for it."""
        ...

    def first_done(self, running: Sequence[Handle]) -> tuple[Handle, PointResult]:
        """Wait until one of ``running`` has ended: which one, and how."""
        ...


@dataclass(frozen=True)
class ExperimentPlan:
    """An experiment with every point's artifact keys, and the points the store already has."""

    experiment: Experiment
    keys: dict[int, dict[str, str]]  # point -> stage -> artifact key
    done: frozenset[int]  # points whose reported stage's artifact is in the store: a rerun skips them

    @property
    def todo(self) -> list[Point]:
        return [p for p in self.experiment.points if p.index not in self.done]

    def parallel(self, requested: int | None) -> int:
        """Points at once: the caller's limit, else the file's, else the GPU count (1 without a GPU)."""
        return requested or self.experiment.spec.max_parallel or default_parallel()


def plan_experiment(file: str | Path, store: ArtifactStore, max_points: int | None = None) -> ExperimentPlan:
    """Load and validate the file, plan every point (ExperimentError, ConfigError, StageError when it cannot)."""
    experiment = load_experiment(file, max_points)
    keys = {p.index: point_keys(experiment, p, store) for p in experiment.points}
    return ExperimentPlan(experiment, keys, frozenset(done_points(keys, store, experiment.spec.report.stage)))


def run_points(plan: ExperimentPlan, store: ArtifactStore, parallel: int, launcher: Launcher[Handle], log: Callable[[str], None]) -> list[PointOutcome]:
    """Every point's outcome, in the experiment's order: reused (its reported stage's artifact was there), built, or failed.

    With ``parallel`` > 1 and several points to run, the stages two of them share are built
    first, once each, so that the points running side by side find them cached; a failed
    shared build fails the points that needed it and no other. A failed point does not stop
    the others.
    """
    exp, keys = plan.experiment, plan.keys
    stage = exp.spec.report.stage
    outcomes = {i: _reused(exp.points[i], keys[i], store, stage) for i in plan.done}
    todo = plan.todo
    if parallel > 1 and len(todo) > 1:
        for build in shared_stages(todo, keys, store):
            _, result = launcher.first_done([launcher.submit(PointJob(shared_title(build), build.point.overrides, build.stages))])
            if not result.ok:
                why = f"shared stages {', '.join(build.stages)}: {result.message}"
                for i in build.shared_by:
                    outcomes.setdefault(i, PointOutcome(exp.points[i], "failed", keys[i], message=why))
    for p, result in _at_most(parallel, [p for p in todo if p.index not in outcomes], launcher):
        outcome = outcomes[p.index] = _ran(p, keys[p.index], result, store, stage)
        log(f"point {p.index} ({p.label}): {outcome.status}" + (f": {outcome.message}" if outcome.message else ""))
    return [outcomes[p.index] for p in exp.points]


def point_title(p: Point) -> str:
    return f"point {p.index} · {p.label}"


def shared_title(build: SharedBuild) -> str:
    return f"shared · {', '.join(build.stages)} · for points {', '.join(map(str, build.shared_by))}"


def _at_most(parallel: int, points: Sequence[Point], launcher: Launcher[Handle]) -> Iterator[tuple[Point, PointResult]]:
    """Start ``points`` in order, at most ``parallel`` running at once; yield each as it ends."""
    queue = list(points)
    running: dict[Handle, Point] = {}
    while queue or running:
        while queue and len(running) < parallel:
            p = queue.pop(0)
            running[launcher.submit(PointJob(point_title(p), p.overrides))] = p
        handle, result = launcher.first_done(list(running))
        yield running.pop(handle), result


def _reused(p: Point, keys: dict[str, str], store: ArtifactStore, stage: str) -> PointOutcome:
    found = store.lookup(stage, keys[stage])
    return PointOutcome(p, "reused", keys, found.path if found else None)


def _ran(p: Point, keys: dict[str, str], result: PointResult, store: ArtifactStore, stage: str) -> PointOutcome:
    """A point whose pipeline ran here: built when it completed and its reported stage's artifact is in the store."""
    if not result.ok:
        return PointOutcome(p, "failed", keys, None, result.message, result.seconds, result.flow_run)
    found = store.lookup(stage, keys[stage])
    if found is None:
        why = (
            f"its pipeline completed but its {stage} artifact {keys[stage]} is not in {store.root}: "
            "do the workers write to another artifact store (NUNER_DATA_DIR)?"
        )
        return PointOutcome(p, "failed", keys, None, why, result.seconds, result.flow_run)
    return PointOutcome(p, "built", keys, found.path, "", result.seconds, result.flow_run)


# ---------------------------------------------------------------- how the run ends


@dataclass(frozen=True)
class Ending:
    """What the experiment's flow run returns, and why it fails (None: it completes)."""

    summary: dict[str, Any]  # state, artifact, key, ran (points built now), failed (points failed)
    failure: str | None = None


def cached(ref: ArtifactRef) -> dict[str, Any]:
    """The summary of a run that found the experiment artifact of all its points already there."""
    return {"state": "Cached", "artifact": ref.path, "key": ref.key, "ran": [], "failed": []}


def ending(outcomes: Sequence[PointOutcome], ref: ArtifactRef) -> Ending:
    failed = [o for o in outcomes if o.status == "failed"]
    summary = {
        "state": "Completed" if not failed else "Failed",
        "artifact": ref.path,
        "key": ref.key,
        "ran": [o.point.index for o in outcomes if o.status == "built"],
        "failed": [o.point.index for o in failed],
    }
    if not failed:
        return Ending(summary)
    why = "; ".join(f"point {o.point.index} ({o.point.label}): {o.message.splitlines()[0] if o.message else 'failed'}" for o in failed)
    return Ending(summary, f"{len(failed)} of {len(outcomes)} points failed ({why}); the others are in {ref.path}; rerun to finish")
