"""Two points on two workers: a real Prefect server, one process work pool, two workers that run one
flow at a time (``--limit 1``), one artifact store. ``nuner experiment FILE --deployment
nuner/full-pipeline --max-parallel 2`` submits each point as a run of the deployment; the test
checks that the two point runs overlapped in time, ran on different workers, and that their shared
stages were built once in the one store both workers write to.

Who ran what is read from Prefect's records, not from the workers' logs: both workers may log
"submitting flow run X" for the same scheduled run (each saw it in its poll), and the server then
aborts the second one's Pending proposal. The records say which worker won (its name label on the
run, the process it started) and that each run went to Running exactly once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import httpx
import psutil
import pytest
from experiment_helpers import artifact_counts, experiment_ref, points, write_experiment
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName
from prefect.client.schemas.objects import FlowRun, State, StateType

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
POOL = "nuner-process"  # the pool prefect.yaml's full-pipeline deployment names
START_TIMEOUT_S = 240.0
RUN_TIMEOUT_S = 600.0
WORKER_LABEL = "prefect.worker.name"  # set on a flow run by the worker that took it (its Pending proposal won)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """A server and two workers, started here and stopped by PID (with their children)."""

    def __init__(self, base: Path):
        self.base = base
        self.data = base / "data"
        self.port = _free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        self.env.update(
            PREFECT_HOME=str(base / "prefect-home"), PREFECT_API_URL=self.api, NUNER_DATA_DIR=str(self.data),
            PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{base / 'prefect.db'}",
        )  # fmt: skip
        self.procs: dict[str, subprocess.Popen] = {}
        self.family: set[tuple[int, float]] = set()

    def spawn(self, name: str, *args: str) -> None:
        log = (self.base / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "prefect", *args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def cli(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{self.logs()}"
        return done

    def log(self, name: str) -> str:
        path = self.base / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def logs(self) -> str:
        return "\n".join(f"---- {n}.log (tail)\n" + "\n".join(self.log(n).splitlines()[-40:]) for n in self.procs)

    def wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                assert proc.poll() is None, f"{name} exited during start-up\n{self.logs()}"
            try:
                if ready():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{what} not ready in {START_TIMEOUT_S:.0f} s\n{self.logs()}")

    def remember(self) -> None:
        for proc in self.procs.values():
            try:
                p = psutil.Process(proc.pid)
                for q in [p, *p.children(recursive=True)]:
                    self.family.add((q.pid, q.create_time()))
            except psutil.NoSuchProcess:
                pass

    def stop(self) -> None:
        self.remember()
        for name in ("w1", "w2", "server"):  # a worker's first SIGINT means "finish gracefully": send two
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            for sig in ([signal.SIGINT, signal.SIGINT] if name != "server" else [signal.SIGINT]):
                proc.send_signal(sig)
                try:
                    proc.wait(timeout=3 if name != "server" else 30)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for pid, created in self.family:  # flow-run processes left behind, ours by PID and start time
            try:
                p = psutil.Process(pid)
                if abs(p.create_time() - created) < 1.0 and p.is_running():
                    p.kill()
            except psutil.NoSuchProcess:
                pass

    def client(self) -> SyncPrefectClient:
        return SyncPrefectClient(self.api)

    def flow_run(self, run_id: str) -> FlowRun:
        with self.client() as client:
            return client.read_flow_run(UUID(run_id))

    def pool_runs(self) -> list[tuple[FlowRun, list[State]]]:
        """Every flow run of the pool, with its state history (oldest first)."""
        with self.client() as client:
            runs = client.read_flow_runs(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[POOL])))
            return [(r, sorted(client.read_flow_run_states(r.id), key=lambda s: s.timestamp)) for r in runs]


@pytest.fixture()
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.spawn("server", "server", "start", "--host", "127.0.0.1", "--port", str(c.port))
        c.wait(lambda: httpx.get(f"{c.api}/health", timeout=5).status_code == 200, "server")
        c.cli(sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process")
        c.cli(sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", "full-pipeline", "--name", "experiment")
        for name in ("w1", "w2"):  # one flow run at a time each: two points go to two workers
            c.spawn(name, "worker", "start", "--pool", POOL, "--type", "process", "--name", name, "--limit", "1")

        def online() -> bool:
            reply = httpx.post(f"{c.api}/work_pools/{POOL}/workers/filter", json={}, timeout=10).json()
            return {w["name"] for w in reply if w.get("status") == "ONLINE"} >= {"w1", "w2"}

        c.wait(online, "two workers")
        c.remember()
        yield c
    finally:
        c.stop()


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

    # At the same time ...
    (s0, e0), (s1, e1) = ((r.start_time, r.end_time) for r in runs)
    assert s0 and s1 and e0 and e1 and s0 < e1 and s1 < e0, f"the two point runs did not overlap: {s0}..{e0} and {s1}..{e1}"
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
