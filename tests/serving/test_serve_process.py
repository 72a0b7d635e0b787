"""`nuner serve` as a process: it serves, a request past its timeout gets 503 + Retry-After, SIGTERM answers what is in flight."""

from __future__ import annotations

import subprocess
import sys

import httpx
from server_process import start_server, stop_server

BODY = {"model": "nuner", "texts": ["Alice ate pizza in Paris."], "labels": ["person", "food", "city"]}


def test_nuner_serve_answers_and_stops_cleanly_on_sigterm(planted_dir):
    process, url = start_server("--model", f"nuner={planted_dir}", "--device", "cpu")
    try:
        response = httpx.post(f"{url}/v1/tag", json=BODY, timeout=30)
        assert response.status_code == 200, response.text
        assert [e["text"] for e in response.json()["results"][0]["entities"]] == ["Alice", "pizza", "Paris"]
        assert httpx.get(f"{url}/v1/models").json()["models"][0]["name"] == "nuner"
    finally:
        output = stop_server(process)
    # uvicorn re-raises SIGTERM once shut down (exit -15); the log says the shutdown was the graceful one
    assert process.returncode in (0, -15) and "Application shutdown complete" in output, output


def test_nuner_serve_bad_model_option_is_one_line_and_exit_2(tmp_path):
    for args, message in ((["--model", "nuner"], "give NAME=DIR"), (["--model", f"x={tmp_path / 'nope'}"], "no such model directory"),
                          (["--model", "x=pretrain:latest"], "no such artifact")):
        out = subprocess.run([sys.executable, "-m", "flows.cli", "serve", *args], capture_output=True, text=True, timeout=120,
                             cwd=tmp_path, env={"NUNER_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"})
        assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, (args, out.stderr)
