"""Exact resume: kill -9 a run in the middle, rerun, and nothing answered is asked for again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from annotate_helpers import KEY, KEY_ENV, make_config, sentence

from nuner_core.annotation.cache import ResponseCache

RUN = """
import sys
from pathlib import Path
from nuner_core.annotation.annotate import run_annotation
from nuner_core.annotation.config import AnnotateConfig
config = AnnotateConfig.model_validate_json(sys.argv[1])
run_annotation(config, Path(sys.argv[2]), Path(sys.argv[3]), cache_dir=Path(sys.argv[4]))
"""


def _wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the killed run to get going")
        time.sleep(0.05)


def test_kill_9_mid_run_then_rerun_requests_only_what_is_not_cached(server, sentences, annotate, tmp_path):
    total, answered_before_kill = 40, 15
    # The server answers the first 15 requests and then holds every later one unanswered:
    # the run is killed with requests in flight, the state a crash leaves most often.
    srv = server(hold_after=answered_before_kill)
    config = make_config(srv.base_url, max_in_flight=4)
    path = sentences(total)
    (tmp_path / "killed").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, config.model_dump_json(), str(path), str(tmp_path / "killed"), str(tmp_path / "cache")],
        env={**os.environ, KEY_ENV: KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        cache_dir = tmp_path / "cache"
        _wait_for(lambda: cache_dir.exists() and srv.request_count > answered_before_kill)
        with ResponseCache(cache_dir) as cache:
            _wait_for(lambda: cache.count_answers() == answered_before_kill)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    answered_first = {r.sentence for r in srv.records() if r.answered}
    assert len(answered_first) == answered_before_kill
    in_flight_at_kill = srv.request_count - answered_before_kill
    assert in_flight_at_kill >= 1

    srv.release()
    seen = srv.request_count
    result, table = annotate(config, path)
    second = srv.records()[seen:]
    assert {r.sentence for r in second}.isdisjoint(answered_first)  # nothing answered is asked for again
    assert len(second) == total - answered_before_kill == result.stats.requests
    assert result.stats.cache_hits == answered_before_kill
    assert dict(srv.answered_per_sentence()) == {sentence(i): 1 for i in range(total)}  # each answered exactly once
    assert table.column("response").null_count == 0 and table.num_rows == total
