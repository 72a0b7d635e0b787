"""`nuner serve` as a process (uvicorn on 127.0.0.1): bad options, a request past its timeout gets 503 + Retry-After, SIGTERM answers what is in flight."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from server_process import start_server, stop_server

BODY = {"model": "nuner", "texts": ["Alice ate pizza in Paris."], "labels": ["person", "food", "city"]}


def test_nuner_serve_bad_model_option_is_one_line_and_exit_2(tmp_path):
    for args, message in ((["--model", "nuner"], "give NAME=DIR"), (["--model", f"x={tmp_path / 'nope'}"], "no such model directory"),
                          (["--model", "x=pretrain:latest"], "no such artifact")):
        out = subprocess.run([sys.executable, "-m", "flows.cli", "serve", *args], capture_output=True, text=True, timeout=120,
                             cwd=tmp_path, env={"NUNER_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"})
        assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, (args, out.stderr)


def test_a_request_past_its_timeout_gets_503_with_retry_after_and_the_worker_keeps_going(planted_dir):
    # every request waits 1.5 s for others to join its batch: longer than its 0.3 s timeout
    process, url = start_server("--model", f"nuner={planted_dir}", "--device", "cpu", "--max-wait-ms", "1500", "--timeout", "0.3")
    try:
        response = httpx.post(f"{url}/v1/tag", json=BODY, timeout=30)
        assert response.status_code == 503 and response.headers["retry-after"] == "1", response.text
        assert "not answered within 0.3 s" in response.json()["error"]
        assert httpx.get(f"{url}/healthz").status_code == 200
    finally:
        output = stop_server(process)
    assert process.returncode in (0, -15), output


def test_sigterm_with_requests_in_flight_answers_them_all(planted_dir):
    # requests wait 2 s in the batcher: SIGTERM arrives while all of them are in flight
    process, url = start_server("--model", f"nuner={planted_dir}", "--device", "cpu", "--max-wait-ms", "2000")
    assert httpx.get(f"{url}/v1/models").json()["models"][0]["name"] == "nuner"
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(httpx.post, f"{url}/v1/tag", json={**BODY, "texts": [f"Alice {i} in Paris"]}, timeout=60) for i in range(6)]
        time.sleep(0.8)
        assert not any(f.done() for f in futures)
        process.terminate()
        responses = [f.result() for f in futures]
    output = stop_server(process)
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    assert [r.json()["results"][0]["entities"][0]["text"] for r in responses] == ["Alice"] * 6
    assert "Application shutdown complete" in output and process.returncode in (0, -15), output
