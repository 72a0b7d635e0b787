"""The experiment's schedule without Prefect: a launcher that runs jobs on threads and records them.

Each point's keys are made up here (no planning): points 0..3, the upstream stages shared by all,
``pretrain`` and ``evaluate`` per point. A job "builds" its artifacts by adding them to a store in
memory, so the scheduler sees what a real run would leave behind.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from nuner_core.experiment.scheduler import ExperimentPlan, PointJob, PointResult, ending, run_points
from nuner_core.experiment.spec import load_experiment

SHARED = ("corpus", "annotate", "dataset")


@dataclass
class MemoryStore:
    """What the scheduler asks of the artifact store: is an artifact final, where is it."""

    root: str = "memory://"
    final: set[tuple[str, str]] = field(default_factory=set)

    def is_final(self, stage: str, key: str) -> bool:
        return (stage, key) in self.final

    def lookup(self, stage: str, key: str):
        return SimpleNamespace(path=f"/store/{stage}/{key}") if (stage, key) in self.final else None


class ThreadLauncher:
    """Runs each job on a thread for a moment; records which ran, and the most running at once."""

    def __init__(self, store: MemoryStore, keys: dict[int, dict[str, str]], fail: set[str] = frozenset(), build: bool = True):
        self.store, self.keys, self.fail, self.build = store, keys, fail, build
        self.pool = ThreadPoolExecutor(max_workers=8)
        self.jobs: list[PointJob] = []
        self.live = self.most = 0
        self.lock = threading.Lock()

    def _run(self, job: PointJob) -> PointResult:
        with self.lock:
            self.live += 1
            self.most = max(self.most, self.live)
        time.sleep(0.05)
        with self.lock:
            self.live -= 1
        if any(word in job.title for word in self.fail):
            return PointResult(False, f"{job.title} broke", 0.05)
        point = int(job.overrides["pretrain.seed"])  # the seed is the point's index here
        if self.build:
            self.store.final |= {(s, k) for s, k in self.keys[point].items() if job.stages is None or s in job.stages}
        return PointResult(True, "", 0.05, f"run-{point}")

    def submit(self, job: PointJob) -> Future:
        self.jobs.append(job)
        return self.pool.submit(self._run, job)

    def first_done(self, running):
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        future = next(f for f in running if f in done)
        return future, future.result()


@pytest.fixture()
def experiment():
    return load_experiment({"name": "t", "profile": "demo", "sweep": {"pretrain.seed": [0, 1, 2, 3]}, "report": {"k": 4}})


def _plan(experiment, store: MemoryStore) -> ExperimentPlan:
    keys = {p.index: {**{s: f"{s}-shared" for s in SHARED}, "pretrain": f"pretrain-{p.index}", "evaluate": f"evaluate-{p.index}"} for p in experiment.points}
    done = frozenset(i for i in keys if store.is_final("evaluate", keys[i]["evaluate"]))
    return ExperimentPlan(experiment, keys, done)


def test_shared_stages_first_once_then_the_points_two_at_a_time(experiment):
    store = MemoryStore()
    plan = _plan(experiment, store)
    launcher = ThreadLauncher(store, plan.keys)
    lines: list[str] = []
    outcomes = run_points(plan, store, 2, launcher, lines.append)

    assert [j.title for j in launcher.jobs][0] == "shared · corpus, annotate, dataset · for points 0, 1, 2, 3"
    assert launcher.jobs[0].stages == SHARED
    assert [j.title for j in launcher.jobs[1:]] == [f"point {i} · seed={i}" for i in range(4)]
    assert all(j.stages is None for j in launcher.jobs[1:])
    assert launcher.most == 2  # never more than the limit, and the limit was used
    assert [o.status for o in outcomes] == ["built"] * 4
    assert [o.flow_run for o in outcomes] == [f"run-{i}" for i in range(4)]
    assert [o.artifact_dir for o in outcomes] == [f"/store/evaluate/evaluate-{i}" for i in range(4)]
    assert sorted(lines) == [f"point {i} (seed={i}): built" for i in range(4)]
    assert ending(outcomes, SimpleNamespace(path="/x", key="k")).failure is None


def test_one_at_a_time_builds_nothing_ahead(experiment):
    store = MemoryStore()
    plan = _plan(experiment, store)
    launcher = ThreadLauncher(store, plan.keys)
    run_points(plan, store, 1, launcher, lambda line: None)
    assert [j.title for j in launcher.jobs] == [f"point {i} · seed={i}" for i in range(4)]
    assert launcher.most == 1


def test_points_in_the_store_are_reused_not_run(experiment):
    store = MemoryStore(final={("evaluate", "evaluate-1"), ("evaluate", "evaluate-3")})
    plan = _plan(experiment, store)
    launcher = ThreadLauncher(store, plan.keys)
    outcomes = run_points(plan, store, 2, launcher, lambda line: None)
    assert [o.status for o in outcomes] == ["built", "reused", "built", "reused"]
    assert [j.title for j in launcher.jobs if j.stages is None] == ["point 0 · seed=0", "point 2 · seed=2"]
    summary = ending(outcomes, SimpleNamespace(path="/x", key="k")).summary
    assert summary["ran"] == [0, 2] and summary["failed"] == []


def test_a_failed_shared_build_fails_its_points_and_a_failed_point_only_itself(experiment):
    store = MemoryStore()
    plan = _plan(experiment, store)
    outcomes = run_points(plan, store, 2, ThreadLauncher(store, plan.keys, fail={"shared"}), lambda line: None)
    assert [o.status for o in outcomes] == ["failed"] * 4
    assert outcomes[0].message == "shared stages corpus, annotate, dataset: shared · corpus, annotate, dataset · for points 0, 1, 2, 3 broke"

    store = MemoryStore()
    plan = _plan(experiment, store)
    outcomes = run_points(plan, store, 2, ThreadLauncher(store, plan.keys, fail={"point 2 "}), lambda line: None)
    assert [o.status for o in outcomes] == ["built", "built", "failed", "built"]
    end = ending(outcomes, SimpleNamespace(path="/x", key="k"))
    assert end.summary["failed"] == [2] and end.failure is not None and end.failure.startswith("1 of 4 points failed (point 2 (seed=2): point 2")


def test_a_completed_run_without_its_artifact_in_the_store_fails(experiment):
    store = MemoryStore()
    plan = _plan(experiment, store)
    outcomes = run_points(plan, store, 1, ThreadLauncher(store, plan.keys, build=False), lambda line: None)
    assert all(o.status == "failed" and "NUNER_DATA_DIR" in o.message for o in outcomes)
    assert outcomes[0].flow_run == "run-0"
