"""``nuner_core.annotation.batches``: the evaluation's way to the LLM keeps annotation's guarantees.

Identical prompts share one request; a prompt another live run holds is waited for, not paid
twice; a run killed with SIGKILL loses nothing that was answered (the rerun asks for the rest only).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from fake_openai import FakeOpenAIServer

from nuner_core.annotation.batches import complete_batches
from nuner_core.annotation.cache import CachedAnswer, KeyMaker, ResponseCache
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.annotation.leases import Holder

MODEL = "fake-model"


def config(url: str, **extra) -> AnnotateConfig:
    return AnnotateConfig(model=MODEL, base_url=url, api_key_env=None, requests_per_minute=60_000, tokens_per_minute=None,
                          max_in_flight=4, request_timeout_s=5.0, backoff_initial_s=0.01, **extra)


def prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Tag it."}, {"role": "user", "content": f"Input: sentence number {i}"}]


@pytest.fixture
def server():
    srv = FakeOpenAIServer(answer=lambda sentence: f"answer to {sentence}").start()
    yield srv
    srv.stop()


def test_batches_in_order_identical_prompts_share_one_request(server, tmp_path):
    batches = [[prompt(0), prompt(1), prompt(0)], [prompt(1), prompt(2)]]
    result = complete_batches(config(server.base_url), batches, tmp_path / "cache")
    assert [[o.content for o in batch] for batch in result.outcomes] == [
        ["answer to sentence number 0", "answer to sentence number 1", "answer to sentence number 0"],
        ["answer to sentence number 1", "answer to sentence number 2"]]
    assert server.request_count == 3
    assert result.requested == [2, 1] and len(result.batch_s) == 2
    assert [[o.from_cache for o in batch] for batch in result.outcomes] == [[False, False, True], [True, False]]
    assert (result.stats.answered, result.stats.shared, result.stats.cache_hits) == (3, 1, 1)


def test_a_prompt_another_run_holds_is_waited_for_not_paid_twice(server, tmp_path):
    cfg = config(server.base_url)
    cache_dir = tmp_path / "cache"
    key = KeyMaker(MODEL, cfg.sampling()).key(prompt(0))
    other = Holder(run="other-run")  # alive: this very process
    with ResponseCache(cache_dir) as cache:
        assert cache.lease(key, other, 60) is None

    def answer_later() -> None:
        time.sleep(0.6)
        with ResponseCache(cache_dir) as cache:
            cache.put_and_release(key, CachedAnswer("the other run's answer", 5, 3, "stop"), other)

    thread = threading.Thread(target=answer_later)
    thread.start()
    result = complete_batches(cfg, [[prompt(0), prompt(1)]], cache_dir)
    thread.join()
    assert [o.content for o in result.outcomes[0]] == ["the other run's answer", "answer to sentence number 1"]
    assert server.request_count == 1 and result.stats.from_other_run == 1
    assert result.joined is not None and "other-run" in result.joined


RUN = """
import json, sys
from pathlib import Path
from nuner_core.annotation.batches import complete_batches
from nuner_core.annotation.config import AnnotateConfig
config = AnnotateConfig.model_validate_json(sys.argv[1])
complete_batches(config, json.loads(sys.argv[2]), Path(sys.argv[3]))
"""


def test_a_killed_run_loses_nothing_that_was_answered(tmp_path):
    srv = FakeOpenAIServer(answer=lambda sentence: f"answer to {sentence}", hold_after=12).start()
    try:
        cfg = config(srv.base_url)
        batches = [[prompt(i) for i in range(20)], [prompt(i) for i in range(20, 30)]]
        cache_dir = tmp_path / "cache"
        child = subprocess.Popen([sys.executable, "-c", RUN, cfg.model_dump_json(), json.dumps(batches), str(cache_dir)],
                                 env=os.environ.copy())
        deadline = time.monotonic() + 60
        while True:  # the 12 answered requests are in the cache, the next ones are held by the server
            if cache_dir.exists():
                with ResponseCache(cache_dir) as cache:
                    if cache.count_answers() >= 12:
                        break
            assert time.monotonic() < deadline and child.poll() is None, "the child never got its 12 answers"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        srv.release()
        before = srv.request_count
        result = complete_batches(cfg, batches, cache_dir)
        assert all(o.content == f"answer to sentence number {i}" for i, o in enumerate(result.outcomes[0] + result.outcomes[1]))
        assert result.stats.cache_hits == 12 and srv.request_count - before == 18  # only the unanswered ones
        assert max(srv.answered_per_sentence().values()) == 1  # nothing was paid for twice
    finally:
        srv.stop()


def test_offline_uses_the_cache_only(server, tmp_path):
    complete_batches(config(server.base_url), [[prompt(0)]], tmp_path / "cache")
    result = complete_batches(config(server.base_url, offline=True), [[prompt(0), prompt(1)]], tmp_path / "cache")
    assert [o.content for o in result.outcomes[0]] == ["answer to sentence number 0", None]
    assert result.outcomes[0][1].reason == "not_cached" and server.request_count == 1


