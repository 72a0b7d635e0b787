"""`nuner serve` as a real process on 127.0.0.1 (uvicorn), for what needs one: timeouts, shutdown, the CLI."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(*args: str, cwd=None, ready_within: float = 120.0, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start `nuner serve ARGS --port <free>`; wait for /readyz. Returns the process and its base URL.

    Its output is piped (read it with ``stop_server``), or written to ``log`` (a long-running benchmark's server).
    """
    port = free_port()
    output = subprocess.PIPE if log is None else log.open("w")
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", *args, "--port", str(port)], cwd=cwd,
                               stdout=output, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = log.read_text()[-2000:] if log is not None else process.stdout.read() if process.stdout else ""
            raise AssertionError(f"nuner serve exited {process.returncode}: {said}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"nuner serve not ready within {ready_within} s: {process.communicate()[0]}")


def stop_server(process: subprocess.Popen, timeout: float = 60.0) -> str:
    """SIGTERM, wait; the output. Kills it only if it does not stop in time (then the test fails on its return code)."""
    process.terminate()
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output or ""
