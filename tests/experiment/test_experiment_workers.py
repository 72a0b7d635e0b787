"""Two points on two workers: a real Prefect server, one process work pool, two workers that run one
flow at a time (``--limit 1``), one artifact store. ``nuner experiment FILE --deployment
nuner/full-pipeline --max-parallel 2`` submits each point as a run of the deployment; the test
checks that the two point runs were held by the two workers at once, ran on different workers, and that their shared
stages were built once in the one store both workers write to.

Who ran what is read from Prefect's records, not from the workers' logs: both workers may log
"submitting flow run X" for the same scheduled run (each saw it in its poll), and the server then
aborts the second one's Pending proposal. The records say which worker won (its name label on the
run, the process it started) and that each run went to Running exactly once.
"""

from __future__ import annotations

import json
import re
import sys
import time

import pytest
from experiment_helpers import artifact_counts, experiment_ref, points, write_experiment
from prefect.client.schemas.objects import StateType
from prefect_cluster import POOL, RUN_TIMEOUT_S, WORKER_LABEL, running_cluster

pytestmark = pytest.mark.slow


@pytest.fixture()
def cluster(tmp_path):
    with running_cluster(tmp_path, ["full-pipeline", "experiment"]) as c:
        yield c


def test_two_points_on_two_workers_share_one_store(cluster, tmp_path, tiny):
    file = write_experiment(tmp_path / "exp.yaml", tiny, {"pretrain.seed": [0, 1]})
    started = time.monotonic()
    done = cluster.cli(
        sys.executable, "-m", "flows.cli", "experiment", str(file), "--deployment", "nuner/full-pipeline", "--max-parallel", "2",
        timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    print(f"experiment on two workers: {time.monotonic() - started:.0f} s")
    assert "experiment artifact:" in done.stdout

    # One store: the shared stages once, each point's pre-training and evaluation, the experiment.
    assert artifact_counts(cluster.data) == {"corpus": 1, "annotate": 1, "dataset": 1, "pretrain": 2, "evaluate": 2, "experiment": 1}
    outcomes = points(experiment_ref(cluster.data))
    assert [o["status"] for o in outcomes] == ["built", "built"]
    runs = [cluster.flow_run(o["flow_run"]) for o in outcomes]
    assert all(r.state_type == StateType.COMPLETED and r.work_pool_name == POOL for r in runs)
    assert all(r.parent_task_run_id for r in runs), "the point runs are not linked to the experiment run"

    # Held at the same time (each taken by a worker before the other ended) ...
    (s0, e0), (s1, e1) = cluster.held(runs)
    assert s0 < e1 and s1 < e0, f"the two point runs were not held at once: {s0}..{e0} and {s1}..{e1}"
    # ... on different workers, in different processes (each started by the worker that took the run).
    assert sorted(r.labels.get(WORKER_LABEL) for r in runs) == ["w1", "w2"], [dict(r.labels) for r in runs]
    assert all(r.infrastructure_pid for r in runs) and runs[0].infrastructure_pid != runs[1].infrastructure_pid

    # The same file through the nuner/experiment deployment, on a worker: every point is done, so Cached.
    done = cluster.cli(sys.executable, "-m", "prefect", "deployment", "run", "nuner/experiment", "--params", json.dumps({"file": str(file)}))
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (run := cluster.flow_run(run_id)).state_type not in {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}:
        assert time.monotonic() < deadline, f"nuner/experiment did not finish\n{cluster.logs()}"
        time.sleep(1.0)
    assert run.state_type == StateType.COMPLETED, f"{run.state}\n{cluster.logs()}"
    assert run.name == "experiment · tiny-sweep · 2 points"
    assert artifact_counts(cluster.data)["experiment"] == 1  # found, not rebuilt

    # Every run the workers took (shared stages, the points, the experiment) ran once: one worker's
    # Pending accepted, one Running, then Completed. Two workers polling the pool may both see a run
    # scheduled and log that they submit it; the server aborts the second one's Pending.
    history = cluster.pool_runs()
    assert len(history) == 4, [r.name for r, _ in history]
    for r, states in history:
        steps = [(s.type.value, s.name) for s in states]
        assert sum(s == ("PENDING", "Pending") for s in steps) == 1, f"{r.name}: taken more than once: {steps}"
        assert sum(t == "RUNNING" for t, _ in steps) == 1, f"{r.name}: executed more than once: {steps}"
        assert steps[-1][0] == "COMPLETED" and r.labels.get(WORKER_LABEL) in {"w1", "w2"}, f"{r.name}: {steps}, {dict(r.labels)}"
