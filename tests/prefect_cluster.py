"""A real Prefect server, one process work pool and two workers that run one flow at a time (``--limit 1``),
started for a test and stopped by PID (imported by name: keep the file name unique).

``running_cluster(base, deployments)`` starts them, with the named deployments of ``prefect.yaml``
deployed, every process writing to the one artifact store ``base/data``; the tests of flow runs on
several workers (experiment points, tag shards) share it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator, Sequence
from uuid import UUID

import httpx
import psutil
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName
from prefect.client.schemas.objects import FlowRun, State

ROOT = Path(__file__).resolve().parents[1]
POOL = "nuner-process"  # the pool prefect.yaml's deployments name
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

    def held(self, runs: Sequence[FlowRun]) -> list[tuple[datetime, datetime]]:
        """When a worker took each run (its accepted Pending) and when the run ended.

        Two runs held at once by two workers of limit 1 ran at the same time as far as the workers
        go; the Running start is not the measure, since a flow-run process on two busy cores can
        take longer to start than a tiny run takes to finish.
        """
        with self.client() as client:
            spans = []
            for r in runs:
                states = sorted(client.read_flow_run_states(r.id), key=lambda s: s.timestamp)
                taken = next(s.timestamp for s in states if s.type.value == "PENDING")
                assert r.end_time is not None, f"{r.name} has not ended"
                spans.append((taken, r.end_time))
            return spans

    def pool_runs(self) -> list[tuple[FlowRun, list[State]]]:
        """Every flow run of the pool, with its state history (oldest first)."""
        with self.client() as client:
            runs = client.read_flow_runs(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[POOL])))
            return [(r, sorted(client.read_flow_run_states(r.id), key=lambda s: s.timestamp)) for r in runs]


@contextmanager
def running_cluster(base: Path, deployments: Sequence[str]) -> Iterator[Cluster]:
    """A server, the pool, ``deployments`` (names in prefect.yaml) and two workers w1, w2; all stopped on exit."""
    c = Cluster(base)
    try:
        c.spawn("server", "server", "start", "--host", "127.0.0.1", "--port", str(c.port))
        c.wait(lambda: httpx.get(f"{c.api}/health", timeout=5).status_code == 200, "server")
        c.cli(sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process")
        c.cli(sys.executable, "-m", "prefect", "--no-prompt", "deploy", *(arg for name in deployments for arg in ("--name", name)))
        for name in ("w1", "w2"):  # one flow run at a time each: two runs go to two workers
            c.spawn(name, "worker", "start", "--pool", POOL, "--type", "process", "--name", name, "--limit", "1")

        def online() -> bool:
            reply = httpx.post(f"{c.api}/work_pools/{POOL}/workers/filter", json={}, timeout=10).json()
            return {w["name"] for w in reply if w.get("status") == "ONLINE"} >= {"w1", "w2"}

        c.wait(online, "two workers")
        c.remember()
        yield c
    finally:
        c.stop()
