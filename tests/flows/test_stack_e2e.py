"""End to end through a real Prefect server and two workers, the way a user runs the project.

The artifact store is on S3 (moto's server on 127.0.0.1, a fresh bucket): the CPU pool and a
"GPU" pool on two "machines" (two local directories) share one bucket, as the README's
scale-out section describes. ``nuner stack up`` on free loopback ports (a throwaway
PREFECT_HOME; machine a's directory), then ``prefect deployment run nuner/full-pipeline`` on
the demo profile reduced by CI_OVERRIDES: Completed with every registered stage's artifact
committed on the store; again: every stage Cached. Then a second worker with an empty disk
(machine b, pool nuner-gpu, ``prefect deploy --name evaluate --pool nuner-gpu``):
``nuner/evaluate`` comes back Cached there without downloading anything, and with a new
evaluation setting only the evaluation runs, on encoders fetched from the store. The flow run
page in headless Chromium (when installed); ``nuner stack down``: no process left.

The tests below share one stack and run in file order; the module fixture stops the stack
even when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from nuner_core.config import load_config
from nuner_core.pipeline import plan
from nuner_core.store import open_store
from tasks.stages import STAGE_TASKS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 900.0  # one deployment run, scheduled to final state, on 2 busy cores
CLI_TIMEOUT_S = 600.0  # `nuner stack up` (server start, deploy, worker) and the prefect CLI
GPU_POOL = "nuner-gpu"  # the second worker's pool (machine b)

# The demo profile, made small enough for CI.
CI_OVERRIDES: dict[str, Any] = {
    "corpus.num_sentences": 200,
    "pretrain.epochs": 1,
    "pretrain.max_steps": 2,
    "pretrain.batch_size": 8,
    "pretrain.max_length": 32,
    "pretrain.controls": [],
    "pretrain.concept_map": False,  # UMAP's first compile costs a minute; tests/pretraining/test_concept_map.py draws it
    "evaluate.benchmarks": ["mit_restaurant"],
    "evaluate.max_test_sentences": 50,
    "evaluate.frozen.ks": [1],
    "evaluate.frozen.seeds": 1,
    "evaluate.finetune.enabled": False,
}
# The stages a full run builds: the targets this config asks for and what they read (no finetune or tag data here).
FULL_RUN = [step.stage for step in plan(load_config("demo", CI_OVERRIDES), None, open_store(Path(tempfile.mkdtemp())))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StackUnderTest:
    def __init__(self, base: Path, store_url: str):
        self.base = base
        self.store_url = store_url
        self.data = base / "machine-a"  # the stack's machine: its local directory (stack/, fetched artifacts, caches)
        self.port = _free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        self.env.update(
            PREFECT_HOME=str(base / "prefect-home"),  # the stack writes PREFECT_API_URL into this home's profile
            NUNER_DATA_DIR=store_url,
            NUNER_LOCAL_DIR=str(self.data),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
            PREFECT_WORKER_QUERY_SECONDS="2",
        )
        self.runs: dict[str, str] = {}  # what -> flow run id
        self.pids: set[tuple[int, float]] = set()  # every process of the stack seen, with its start time

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{self.logs()}")
        return done

    def nuner(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli(sys.executable, "-m", "flows.cli", *args, check=check)

    def state(self) -> dict[str, Any]:
        return json.loads((self.data / "stack" / "stack.json").read_text())

    def remember_processes(self) -> None:
        """Record the stack's processes and all their descendants (flow runs included)."""
        for name in ("server", "worker"):
            rec = self.state().get(name)
            if not rec:
                continue
            try:
                proc = psutil.Process(rec["pid"])
                family = [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for p in family:
                try:
                    self.pids.add((p.pid, p.create_time()))
                except psutil.NoSuchProcess:
                    pass

    @property
    def machine_b(self) -> Path:
        return self.base / "machine-b"

    def start_second_worker(self) -> None:
        """`prefect worker start --pool nuner-gpu` as on another machine: same bucket, its own empty local directory."""
        env = self.env | {"PREFECT_API_URL": self.api, "NUNER_LOCAL_DIR": str(self.machine_b), "PREFECT_WORKER_QUERY_SECONDS": "2"}
        log = (self.base / "worker-b.log").open("ab")
        name = f"gpu-{self.port}"
        self.second_worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", GPU_POOL, "--type", "process", "--name", name],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + CLI_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.second_worker.poll() is None, f"the second worker exited:\n{self.logs()}"
            reply = httpx.post(f"{self.api}/work_pools/{GPU_POOL}/workers/filter", json={}, timeout=30)
            if reply.status_code == 200 and any(w["name"] == name and w.get("status") == "ONLINE" for w in reply.json()):
                return
            time.sleep(0.5)
        raise AssertionError(f"the second worker did not come online\n{self.logs()}")

    def stop_second_worker(self) -> None:
        """Stop the worker this test started (and what it runs): SIGINT twice as `nuner stack down` does, then SIGKILL."""
        proc = getattr(self, "second_worker", None)
        if proc is None or proc.poll() is not None:
            return
        family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        for _ in range(2):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        for pid in family:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=30)

    def logs(self) -> str:
        out = []
        for name in ("server.log", "worker.log", "deploy.log", "../../worker-b.log"):
            path = self.data / "stack" / name
            if path.is_file():
                out.append(f"---- {name} (tail)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-60:]))
        return "\n".join(out)

    def run_deployment(self, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """``prefect deployment run`` as a user types it; wait for a final state; return the flow run."""
        done = self.cli(sys.executable, "-m", "prefect", "deployment", "run", f"nuner/{name}", "--params", json.dumps({"overrides": overrides}))
        match = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)
        assert match, f"no flow run id in:\n{done.stdout}"
        run_id = match.group(1)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            self.remember_processes()
            run = httpx.get(f"{self.api}/flow_runs/{run_id}", timeout=30).json()
            if run["state"] and run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                return run
            time.sleep(1.0)
        raise AssertionError(f"flow run {run_id} of nuner/{name} did not finish in {RUN_TIMEOUT_S:.0f} s\n{self.logs()}")

    def stage_states(self, run_id: str) -> dict[str, list[str]]:
        """Stage name -> the state names of its task runs in this flow run."""
        reply = httpx.post(f"{self.api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}, timeout=30)
        reply.raise_for_status()
        by_key = {task.task_key: stage for stage, task in STAGE_TASKS.items()}
        states: dict[str, list[str]] = {}
        for task_run in reply.json():
            stage = by_key.get(task_run["task_key"], task_run["task_key"])
            states.setdefault(stage, []).append(task_run["state"]["name"])
        return states

    def artifacts(self, run_id: str) -> dict[str, str]:
        reply = httpx.post(f"{self.api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}, timeout=30)
        reply.raise_for_status()
        return {a["key"] or a["id"]: a["type"] for a in reply.json()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_server):
    import uuid

    import fsspec
    from s3_env import S3_ENV

    with pytest.MonkeyPatch.context() as mp:  # this process reads the store too (the AWS_* variables, as on a worker)
        for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_server}.items():
            mp.setenv(name, value)
        bucket = f"nuner-e2e-{uuid.uuid4().hex[:8]}"
        fsspec.filesystem("s3", use_listings_cache=False).mkdir(bucket)
        s = StackUnderTest(tmp_path_factory.mktemp("stack"), f"s3://{bucket}/store")
        started = time.monotonic()
        s.nuner("stack", "up", "--port", str(s.port))
        print(f"stack up in {time.monotonic() - started:.0f} s")
        s.remember_processes()
        yield s
        s.stop_second_worker()
        if (s.data / "stack" / "stack.json").is_file() and (s.state().get("server") or s.state().get("worker")):
            s.nuner("stack", "down", check=False)  # a test failed before test_stack_down_leaves_nothing


def _fail(stack: StackUnderTest, run: dict[str, Any], what: str) -> str:
    return f"{what}: flow run {run['id']} ended {run['state']['name']}: {run['state'].get('message')}\n{stack.logs()}"


def test_up_is_idempotent(stack):
    before = stack.state()
    stack.nuner("stack", "up", "--port", str(stack.port), "--no-deploy")
    after = stack.state()
    assert after["server"]["pid"] == before["server"]["pid"] and after["worker"]["pid"] == before["worker"]["pid"]
    status = stack.nuner("stack", "status")
    assert "nuner/full-pipeline" in status.stdout and "nuner/evaluate" in status.stdout


def test_full_pipeline_completes_then_is_cached(stack):
    run = stack.run_deployment("full-pipeline", CI_OVERRIDES)
    assert run["state"]["type"] == "COMPLETED", _fail(stack, run, "first run")
    stack.runs["first"] = run["id"]
    assert run["name"].startswith("nuner · demo · all ")
    states = stack.stage_states(run["id"])
    assert states == {stage: ["Completed"] for stage in FULL_RUN}

    store = open_store(stack.store_url, local_dir=stack.base / "inspect")
    config = load_config("demo", CI_OVERRIDES)
    for step in plan(config, None, store):
        ref = store.lookup(step.stage, step.key, fetch=False)
        assert ref is not None, f"no {step.stage} artifact {step.key} committed in {stack.store_url}"
        assert ref.manifest()["stage"] == step.stage
    artifacts = stack.artifacts(run["id"])
    assert artifacts.get("nuner-run") == "table"
    for stage in FULL_RUN:
        assert artifacts.get(f"{stage}-summary") == "markdown", f"no {stage}-summary artifact among {sorted(artifacts)}"
    assert list(artifacts.values()).count("progress") >= len(FULL_RUN)

    again = stack.run_deployment("full-pipeline", CI_OVERRIDES)
    assert again["state"]["type"] == "COMPLETED", _fail(stack, again, "second run")
    assert stack.stage_states(again["id"]) == {stage: ["Cached"] for stage in FULL_RUN}


def test_evaluate_on_a_second_worker_with_an_empty_disk(stack):
    if "first" not in stack.runs:
        pytest.skip("the full pipeline did not complete")
    # Machine b: a "GPU" pool of its own, its worker's local directory empty; nuner/evaluate moved there.
    stack.cli(sys.executable, "-m", "prefect", "work-pool", "create", GPU_POOL, "--type", "process")
    stack.start_second_worker()
    stack.cli(sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", "evaluate", "--pool", GPU_POOL)
    try:
        run = stack.run_deployment("evaluate", CI_OVERRIDES)
        assert run["state"]["type"] == "COMPLETED", _fail(stack, run, "evaluate on machine b")
        assert run["work_pool_name"] == GPU_POOL
        assert stack.stage_states(run["id"]) == {"evaluate": ["Cached"]}, "machine b did not see machine a's evaluation"
        fetched = stack.machine_b / "remote"
        assert not fetched.exists() or not [p for p in fetched.rglob("*") if p.is_file()], "a Cached stage downloaded files"

        # A new evaluation setting: the evaluation reruns there on the stored encoders, nothing before it.
        overrides = CI_OVERRIDES | {"evaluate.test_seed": 1}
        run = stack.run_deployment("evaluate", overrides)
        assert run["state"]["type"] == "COMPLETED", _fail(stack, run, "evaluate")
        assert stack.stage_states(run["id"]) == {"evaluate": ["Completed"]}, "earlier stages ran"
        assert run["name"] == f"nuner · demo · evaluate · {len(overrides)} overrides"
        assert list(fetched.glob("*/pretrain/*/*/manifest.json")), "machine b did not fetch the encoders it evaluated"
    finally:
        stack.stop_second_worker()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_flow_run_page_in_a_browser(stack, tmp_path):
    if "first" not in stack.runs:
        pytest.skip("the full pipeline did not complete")
    # NUNER_E2E_SCREENSHOT=docs/ui-flow-run.png refreshes the README's picture.
    out = Path(os.environ.get("NUNER_E2E_SCREENSHOT") or tmp_path / "ui-flow-run.png").resolve()
    expect = [f"{stage} ·" for stage in FULL_RUN]  # task run titles from each stage's describe()
    done = stack.cli(
        sys.executable, str(ROOT / "scripts" / "ui_screenshot.py"),
        "--url", f"http://127.0.0.1:{stack.port}", "--flow-run", stack.runs["first"],
        *[a for e in expect for a in ("--expect", e)], "--artifact", f"{FULL_RUN[0]}-summary",
        "--out", str(out), "--timeout", "180",
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.stat().st_size > 10_000 and out.with_name(f"{out.stem}-artifacts.png").is_file()


def test_stack_down_leaves_nothing(stack):
    stack.remember_processes()
    assert stack.pids, "no stack process was recorded"
    stack.nuner("stack", "down")
    left = []
    for pid, created in stack.pids:
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {' '.join(proc.cmdline())}")
        except psutil.NoSuchProcess:
            pass
    assert not left, f"processes left after `nuner stack down`: {left}"
    state = stack.state()
    assert state["server"] is None and state["worker"] is None
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", stack.port)) != 0, "something still listens on the server's port"
    profiles = Path(stack.env["PREFECT_HOME"]) / "profiles.toml"
    assert stack.api not in profiles.read_text(), "PREFECT_API_URL was not restored"
