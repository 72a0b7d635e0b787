"""Two runs on one cache pay once: leases in the shared cache, taken over from dead or silent runs."""

from __future__ import annotations

import json
import logging
import subprocess

import pytest
from annotate_helpers import FakeClock, make_config, sentence, spawn_run, wait_for
from fake_openai import default_answer

from nuner_core.annotation.asking import LEASE_POLL_S
from nuner_core.annotation.cache import LEASE, ResponseCache, response_key
from nuner_core.annotation.leases import Holder
from nuner_core.annotation.prompt import load_template
from nuner_core.stage_api import StageError


def _key(config, text: str) -> str:
    return response_key(config.model, load_template(None).messages(text), config.sampling())


def test_two_runs_at_once_pay_once_and_the_second_says_it_joins(server, sentences, annotate, tmp_path, caplog):
    total = 60
    srv = server(latency_s=0.08)
    config = make_config(srv.base_url, max_in_flight=4)
    path = sentences(total)
    first = spawn_run(config, path, tmp_path / "first", tmp_path / "cache", stderr=subprocess.PIPE)
    try:
        wait_for(lambda: srv.request_count >= 8, what="the first run to be under way")  # answered some, more in flight
        caplog.set_level(logging.INFO, logger="nuner.annotate")
        result, table = annotate(config, path, out="second", clock=None)
        assert first.wait(60) == 0, first.stderr.read().decode()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert dict(srv.answered_per_sentence()) == {sentence(i): 1 for i in range(total)}  # not one prompt paid twice
    assert srv.request_count == total
    assert table.column("response").to_pylist() == [default_answer(sentence(i)) for i in range(total)]
    assert result.stats.from_other_run >= 1  # waited for sentences the first run was asking for
    assert 0 < result.stats.answered < total  # and asked for others itself: it joined
    assert "This run joins it" in caplog.text and f"pid {first.pid}" in caplog.text
    assert f"pid {first.pid}" in result.summary()["joined_run"]  # in the manifest and the UI table too


def test_a_silent_runs_lease_is_taken_over_when_it_expires(server, sentences, annotate, tmp_path):
    """A run on another machine that stopped renewing: its sentence waits for the lease's expiry, then is asked here."""
    srv = server()
    config = make_config(srv.base_url)
    path = sentences(5)
    lease_clock = FakeClock()  # the leases' time: the run's polls for the other run's answer advance it, nothing sleeps
    elsewhere = Holder(run="gone-run", pid=1, host="another-host")
    with ResponseCache(tmp_path / "cache", clock=lease_clock.now) as cache:
        assert cache.lease(_key(config, sentence(3)), elsewhere, seconds=1.0) is None
    expires = lease_clock.now() + 1.0
    result, table = annotate(config, path, lease_clock=lease_clock)
    assert lease_clock.now() >= expires  # it did wait for the lease to lapse
    assert len(lease_clock.sleeps) >= 5 and set(lease_clock.sleeps) == {LEASE_POLL_S}  # polling the cache meanwhile
    assert table.column("error").null_count == 5 and result.stats.taken_over == 1
    assert dict(srv.answered_per_sentence()) == {sentence(i): 1 for i in range(5)}


def test_a_dead_local_runs_lease_is_taken_over_at_once(server, sentences, annotate, tmp_path):
    srv = server()
    config = make_config(srv.base_url)
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs on this host
    lease_clock = FakeClock()
    with ResponseCache(tmp_path / "cache", clock=lease_clock.now) as cache:
        assert cache.lease(_key(config, sentence(1)), Holder(pid=dead.pid), seconds=600) is None
    result, table = annotate(config, sentences(3), lease_clock=lease_clock)
    assert lease_clock.sleeps == []  # not a single poll, let alone the 600 s of the lease
    assert table.column("error").null_count == 3 and srv.request_count == 3 and result.stats.from_other_run == 0


def test_leases_are_released_when_the_run_ends(server, sentences, annotate, tmp_path):
    srv = server(latency_s=0.02)
    with pytest.raises(StageError, match="max_requests=2 reached"):  # a run that stops early
        annotate(make_config(srv.base_url, max_requests=2), sentences(8))
    with ResponseCache(tmp_path / "cache") as cache:
        leftovers = [k for k in cache._cache.iterkeys() if str(k).startswith(LEASE)]
        assert leftovers == []
        # a lease's value names its run, readable with any SQLite client
        held = Holder()
        cache.lease("k", held, 60)
        assert json.loads(cache._cache.get(LEASE + "k"))["pid"] == held.pid
        assert cache.lease("k", Holder(), 60) == held  # a second live run does not get it
        cache.release("k", held)
        assert cache.lease("k", Holder(), 60) is None


def test_a_lease_lapses_at_the_expiry_it_stores_in_the_time_of_the_caches_clock(tmp_path):
    clock = FakeClock()
    held, other = Holder(run="a", host="another-host"), Holder(run="b")  # (another host: alive until its lease lapses)
    with ResponseCache(tmp_path / "cache", clock=clock.now) as cache:
        assert cache.lease("k", held, 10) is None
        assert json.loads(cache._cache.get(LEASE + "k"))["expires"] == clock.now() + 10
        clock.t += 9
        assert cache.lease("k", other, 10) == held
        assert cache.renew(["k"], held, 10) == 1  # now 10 s from here
        clock.t += 9.5
        assert cache.holders(["k"]) == [held]
        clock.t += 1
        assert cache.holders(["k"]) == [None]
        assert cache.lease("k", other, 10) is None  # lapsed: the next run takes it
