"""The local stack: a Prefect server (SQLite), the work pool, the deployments and a worker.

``nuner stack up`` starts what is not running yet and leaves the rest alone, so a second
``up`` is harmless (it only redeploys ``prefect.yaml``). Everything it starts is recorded
in ``<data root>/stack/stack.json`` by PID *and* process start time, so ``down`` stops
exactly those processes (and the flow runs they spawned) and never an unrelated process
that happens to reuse a PID. Logs and the SQLite database live beside it::

    <data root>/stack/
      stack.json    what runs: URL, pool, server and worker PIDs
      prefect.db    the server's database (history only: artifacts are the source of truth)
      server.log  worker.log  deploy.log

``up`` also sets ``PREFECT_API_URL`` in the active Prefect profile (and ``down`` restores
the previous value), so that a plain ``prefect deployment run nuner/full-pipeline`` talks
to this server.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import psutil

from nuner_core.store import data_root, store_location
from nuner_core.store.objects import is_url

PROJECT_DIR = Path(__file__).resolve().parents[1]  # the clone: prefect.yaml lives here
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
DEFAULT_POOL = "nuner-process"
STARTUP_TIMEOUT_S = 240.0  # server health and worker registration; generous for 2 busy cores
DEPLOY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0


class StackError(RuntimeError):
    """The stack cannot be started or stopped; the message says why and where the logs are."""


@dataclass
class Proc:
    """A process the stack started: identified by PID and start time together."""

    pid: int
    create_time: float
    cmd: list[str]
    log: str

    def process(self) -> psutil.Process | None:
        """The live process, or None when it has exited (or the PID now belongs to another)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    def alive(self) -> bool:
        return self.process() is not None


@dataclass
class StackState:
    host: str
    port: int
    pool: str
    data_root: str
    server: Proc | None = None
    worker: Proc | None = None
    profile: dict[str, Any] = field(default_factory=dict)  # the Prefect profile we pointed at the server

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @classmethod
    def load(cls, path: Path) -> StackState | None:
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        for name in ("server", "worker"):
            raw[name] = Proc(**raw[name]) if raw.get(name) else None
        return cls(**raw)

    def save(self, path: Path) -> None:
        part = path.with_suffix(".part")
        part.write_text(json.dumps(asdict(self), indent=2))
        os.replace(part, path)


class Stack:
    def __init__(
        self,
        root: Path | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        pool: str = DEFAULT_POOL,
        project_dir: Path = PROJECT_DIR,
        echo: Callable[[str], None] = print,
    ):
        self.root = Path(root).resolve() if root is not None else data_root()
        # The worker's store: this directory, or (NUNER_DATA_DIR=s3://...) the object store, with this
        # directory as the worker's local one (fetched artifacts, caches, the stack itself).
        self.store = store_location() if root is None else str(self.root)
        self.dir = self.root / "stack"
        self.state_path = self.dir / "stack.json"
        self.host, self.port, self.pool = host, port, pool
        self.project_dir = project_dir
        self.echo = echo
        self.prefect = [sys.executable, "-m", "prefect"]  # this environment's Prefect: the worker runs flows with it

    # ----------------------------------------------------------------- up
    def up(self, deploy: bool = True) -> StackState:
        """Start what is not running; return the state. Safe to call again."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            state = StackState.load(self.state_path)
            if state is None or not (state.server and state.server.alive()):
                if state is not None and state.worker and state.worker.alive():
                    self._stop(state.worker, "worker", worker=True)  # an orphan: its server is gone
                state = StackState(self.host, self.port, self.pool, self.store, profile=(state.profile if state else {}))
                self._start_server(state)
            else:
                if state.port != self.port:
                    self.echo(f"server already running at {state.url} (not starting another on port {self.port})")
                self._wait_health(state)
                self.echo(f"server   running  {state.url}  (pid {state.server.pid})")
            self._ensure_pool(state)
            if deploy:
                self._deploy(state)
            if state.worker and state.worker.alive():
                self.echo(f"worker   running  pool {state.pool}  (pid {state.worker.pid})")
            else:
                self._start_worker(state)
            self._point_profile(state)
            state.save(self.state_path)
        return state

    def _start_server(self, state: StackState) -> None:
        if _port_in_use(state.host, state.port):
            raise StackError(
                f"port {state.port} on {state.host} is in use by a process this stack did not start; "
                f"stop it or choose another port (nuner stack up --port N)"
            )
        env = _clean_env()
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{self.dir / 'prefect.db'}"
        env["PREFECT_UI_API_URL"] = state.api_url
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        cmd = [*self.prefect, "server", "start", "--host", state.host, "--port", str(state.port)]
        state.server = self._spawn(cmd, env, self.dir / "server.log", cwd=self.dir)
        state.save(self.state_path)  # recorded before waiting: a failed start can still be stopped
        self._wait_health(state)
        self.echo(f"server   started  {state.url}  (pid {state.server.pid}, database {self.dir / 'prefect.db'})")

    def _wait_health(self, state: StackState) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if state.server is None or not state.server.alive():
                raise StackError(f"the Prefect server exited during start-up; see {self.dir / 'server.log'}")
            try:
                if httpx.get(f"{state.api_url}/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise StackError(f"the Prefect server did not answer {state.api_url}/health in {STARTUP_TIMEOUT_S:.0f} s; see {self.dir / 'server.log'}")

    def _ensure_pool(self, state: StackState) -> None:
        with httpx.Client(base_url=state.api_url, timeout=30) as api:
            if api.get(f"/work_pools/{state.pool}").status_code == 200:
                return
            from prefect.workers.process import ProcessWorker

            reply = api.post(
                "/work_pools/",
                json={"name": state.pool, "type": "process", "base_job_template": ProcessWorker.get_default_base_job_template()},
            )
            if reply.status_code not in (200, 201, 409):
                raise StackError(f"creating work pool {state.pool!r} failed: HTTP {reply.status_code} {reply.text[:300]}")
        self.echo(f"pool     created  {state.pool} (process)")

    def _deploy(self, state: StackState) -> None:
        log = self.dir / "deploy.log"
        env = _clean_env() | {"PREFECT_API_URL": state.api_url}
        with log.open("ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} prefect deploy --all\n".encode())
            out.flush()
            try:
                done = subprocess.run(
                    [*self.prefect, "--no-prompt", "deploy", "--all"],
                    cwd=self.project_dir, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=DEPLOY_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired:
                raise StackError(f"prefect deploy took over {DEPLOY_TIMEOUT_S:.0f} s; see {log}") from None
        if done.returncode != 0:
            raise StackError(f"prefect deploy --all failed (exit {done.returncode}); see {log}")
        names = [d["name"] for d in self.deployments(state)]
        self.echo(f"deployed {', '.join('nuner/' + n for n in names)}")

    def _start_worker(self, state: StackState) -> None:
        env = _clean_env() | {"PREFECT_API_URL": state.api_url, "NUNER_DATA_DIR": self.store}
        if is_url(self.store):  # credentials stay in the environment the worker inherits, never in its command line
            env["NUNER_LOCAL_DIR"] = str(self.root)
        env.setdefault("PREFECT_WORKER_QUERY_SECONDS", "5")  # pick up a new run within seconds
        name = f"nuner-{state.port}"
        cmd = [*self.prefect, "worker", "start", "--pool", state.pool, "--type", "process", "--name", name]
        state.worker = self._spawn(cmd, env, self.dir / "worker.log", cwd=self.project_dir)
        state.save(self.state_path)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not state.worker.alive():
                raise StackError(f"the worker exited during start-up; see {self.dir / 'worker.log'}")
            if any(w["name"] == name and w.get("status") == "ONLINE" for w in self.workers(state)):
                self.echo(f"worker   started  pool {state.pool}  (pid {state.worker.pid}, log {self.dir / 'worker.log'})")
                return
            time.sleep(0.5)
        raise StackError(f"the worker did not come online in {STARTUP_TIMEOUT_S:.0f} s; see {self.dir / 'worker.log'}")

    def _spawn(self, cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> Proc:
        with log.open("ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            out.flush()
            # Its own session: a Ctrl-C in the terminal that ran `nuner stack up` does not reach it.
            popen = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return Proc(popen.pid, psutil.Process(popen.pid).create_time(), cmd, str(log))

    def _point_profile(self, state: StackState) -> None:
        """Set PREFECT_API_URL in the active Prefect profile, remembering what was there."""
        from prefect.context import get_settings_context
        from prefect.settings import PREFECT_API_URL, load_profiles, save_profiles

        name = get_settings_context().profile.name
        profiles = load_profiles()
        profile = profiles[name] if name in profiles.names else None
        current = profile.settings.get(PREFECT_API_URL) if profile else None
        if current == state.api_url:
            return
        if not state.profile or state.profile.get("name") != name:
            state.profile = {"name": name, "previous_api_url": current}
        profiles.update_profile(name, {PREFECT_API_URL: state.api_url})
        save_profiles(profiles)
        self.echo(f"profile  {name}: PREFECT_API_URL={state.api_url}")
        env_url = os.environ.get("PREFECT_API_URL")
        if env_url and env_url != state.api_url:
            self.echo(f"warning: PREFECT_API_URL={env_url} in your environment overrides the profile; unset it to use this stack")

    def _restore_profile(self, state: StackState) -> None:
        if not state.profile:
            return
        from prefect.settings import PREFECT_API_URL, load_profiles, save_profiles

        name, previous = state.profile["name"], state.profile.get("previous_api_url")
        profiles = load_profiles()
        if name in profiles.names and profiles[name].settings.get(PREFECT_API_URL) == state.api_url:
            profiles.update_profile(name, {PREFECT_API_URL: previous})  # None removes the setting
            save_profiles(profiles)
            self.echo(f"profile  {name}: PREFECT_API_URL " + (f"restored to {previous}" if previous else "unset"))
        state.profile = {}

    # --------------------------------------------------------------- down
    def down(self) -> list[int]:
        """Stop the worker (and its flow runs), then the server. Returns the PIDs stopped."""
        with self._lock():
            state = StackState.load(self.state_path)
            if state is None:
                self.echo(f"nothing to stop: no stack recorded under {self.dir}")
                return []
            stopped: list[int] = []
            if state.worker:
                stopped += self._stop(state.worker, "worker", worker=True)
                state.worker = None
                state.save(self.state_path)
            if state.server:
                stopped += self._stop(state.server, "server", worker=False)
                state.server = None
            self._restore_profile(state)
            state.save(self.state_path)
        return stopped

    def _stop(self, rec: Proc, what: str, worker: bool) -> list[int]:
        proc = rec.process()
        if proc is None:
            self.echo(f"{what:<8} not running (pid {rec.pid} has exited)")
            return []
        family = [proc] + _descendants(proc)  # flow runs may sit in their own sessions: found by parentage, now
        # A Prefect worker treats its first SIGTERM/SIGINT as "finish gracefully"; a second SIGINT stops it.
        signals = [signal.SIGINT, signal.SIGINT] if worker else [signal.SIGINT]
        for i, sig in enumerate(signals):
            _signal(proc, sig)
            if _wait_gone([proc], 2.0 if i < len(signals) - 1 else STOP_TIMEOUT_S):
                break
        if not _wait_gone([proc], 0):
            self.echo(f"{what} (pid {proc.pid}) ignored SIGINT; sending SIGKILL")
            _signal(proc, signal.SIGKILL)
            _wait_gone([proc], 10.0)
        leftovers = [p for p in family[1:] if _alive(p)]
        for p in leftovers:
            _signal(p, signal.SIGTERM)
        if leftovers and not _wait_gone(leftovers, 15.0):
            for p in leftovers:
                _signal(p, signal.SIGKILL)
            _wait_gone(leftovers, 10.0)
        self.echo(f"{what:<8} stopped  (pid {rec.pid}" + (f" and {len(family) - 1} child process(es))" if len(family) > 1 else ")"))
        return [p.pid for p in family]

    # ------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """What runs, as a dict (also printed)."""
        state = StackState.load(self.state_path)
        if state is None:
            self.echo(f"no stack recorded under {self.dir}; start one with: nuner stack up")
            return {"running": False}
        server_alive = bool(state.server and state.server.alive())
        worker_alive = bool(state.worker and state.worker.alive())
        server_pid = state.server.pid if state.server else None
        worker_pid = state.worker.pid if state.worker else None
        healthy = False
        if server_alive:
            try:
                healthy = httpx.get(f"{state.api_url}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                healthy = False
        info: dict[str, Any] = {
            "running": server_alive and healthy and worker_alive,
            "url": state.url,
            "server": {"pid": server_pid, "alive": server_alive, "healthy": healthy},
            "worker": {"pid": worker_pid, "alive": worker_alive},
            "pool": state.pool,
            "data_root": state.data_root,
            "logs": str(self.dir),
        }
        self.echo(f"server   {_word(server_alive and healthy)}  {state.url}" + (f"  (pid {server_pid})" if server_alive else ""))
        self.echo(f"worker   {_word(worker_alive)}  pool {state.pool}" + (f"  (pid {worker_pid})" if worker_alive else ""))
        if healthy:
            info["deployments"] = ["nuner/" + d["name"] for d in self.deployments(state)]
            info["workers"] = {w["name"]: w.get("status") for w in self.workers(state)}
            self.echo(f"deployments  {', '.join(info['deployments']) or 'none'}")
        self.echo(f"artifacts {state.data_root}")
        self.echo(f"logs      {self.dir}/{{server,worker,deploy}}.log")
        return info

    def deployments(self, state: StackState) -> list[dict[str, Any]]:
        reply = httpx.post(f"{state.api_url}/deployments/filter", json={"limit": 200}, timeout=30)
        reply.raise_for_status()
        return sorted(reply.json(), key=lambda d: d["name"])

    def workers(self, state: StackState) -> list[dict[str, Any]]:
        try:
            reply = httpx.post(f"{state.api_url}/work_pools/{state.pool}/workers/filter", json={}, timeout=30)
        except httpx.HTTPError:
            return []
        return reply.json() if reply.status_code == 200 else []

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _clean_env() -> dict[str, str]:
    """This environment, minus a PREFECT_API_URL that would point the children elsewhere."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    return env


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return list(proc.children(recursive=True))  # psutil has no type information: list() makes the list type known
    except psutil.Error:
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.Error:
        pass


def _wait_gone(procs: list[psutil.Process], timeout: float) -> bool:
    """Wait until every process has exited (reaping our own children); True when all are gone."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            try:
                os.waitpid(p.pid, os.WNOHANG)  # our child: reap it so it does not linger as a zombie
            except ChildProcessError:
                pass
        if not any(_alive(p) for p in procs):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _word(ok: bool) -> str:
    return "running" if ok else "stopped"
