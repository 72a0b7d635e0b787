"""Every fault the endpoint can throw, one table row each, against a real local HTTP server."""

from __future__ import annotations

import pytest
from annotate_helpers import KEY, FakeClock, make_config, sentence
from fake_openai import Fault, default_answer

from nuner_core.annotation.cache import ResponseCache
from nuner_core.stage_api import StageError

N = 5
VICTIM = sentence(2)  # the sentence whose requests get the faults


@pytest.mark.parametrize(
    "faults, config, retries, expect_sleep",
    [
        pytest.param([Fault.status_code(429, retry_after=7)], {}, {"rate_limited": 1}, 7.0, id="429-retry-after"),
        pytest.param([Fault.status_code(429, retry_after_ms=1500)], {}, {"rate_limited": 1}, 1.5, id="429-retry-after-ms"),
        pytest.param([Fault.status_code(429, retry_after=999)], {}, {"rate_limited": 1}, 30.0, id="429-retry-after-capped"),
        pytest.param([Fault.status_code(500)], {}, {"server_error": 1}, None, id="500"),
        pytest.param([Fault.status_code(503), Fault.status_code(503)], {}, {"server_error": 2}, None, id="503-twice"),
        pytest.param([Fault.slow(0.3)], {}, {}, None, id="slow-but-in-time"),
        pytest.param([Fault.slow(3.0)], {"request_timeout_s": 0.3}, {"timeout": 1}, None, id="timeout"),
        pytest.param([Fault.drop()], {}, {"connection": 1}, None, id="dropped-connection"),
        pytest.param([Fault.malformed()], {}, {"malformed": 1}, None, id="malformed-json"),
        pytest.param([Fault.empty()], {}, {"empty": 1}, None, id="empty-content"),
        pytest.param([Fault.truncated()], {}, {"truncated": 1}, None, id="truncated"),
        pytest.param([Fault.status_code(429), Fault.drop(), Fault.status_code(502), Fault.malformed()], {},
                     {"rate_limited": 1, "connection": 1, "server_error": 1, "malformed": 1}, None, id="mixed"),
    ],
)
def test_fault_is_retried_and_every_sentence_answered_once(server, sentences, annotate, faults, config, retries, expect_sleep):
    srv = server(script={VICTIM: faults})
    clock = FakeClock()
    result, table = annotate(make_config(srv.base_url, **config), sentences(N), clock=clock)

    assert table.column("response").to_pylist() == [default_answer(sentence(i)) for i in range(N)]
    assert table.column("error").to_pylist() == [None] * N
    assert dict(srv.answered_per_sentence()) == {sentence(i): 1 for i in range(N)}
    expected_retries = sum(retries.values())
    assert srv.request_count == N + expected_retries
    assert (result.stats.requests, dict(result.stats.retries)) == (N + expected_retries, retries)
    assert result.stats.answered == N and not result.stats.failures
    if expect_sleep is not None:
        assert expect_sleep in clock.sleeps  # the server's Retry-After, honoured up to the cap
    if retries and expect_sleep is None:
        backoffs = [s for s in clock.sleeps if s >= 0.25]  # rate-limit waits are tiny; backoffs are >= initial/2
        assert len(backoffs) == expected_retries and all(s <= 8.0 for s in backoffs)


def test_backoff_grows_exponentially_with_jitter(server, sentences, annotate):
    srv = server(script={VICTIM: [Fault.status_code(500)] * 5})
    clock = FakeClock()
    annotate(make_config(srv.base_url, backoff_initial_s=1.0, backoff_max_s=4.0), sentences(N), clock=clock)
    backoffs = [s for s in clock.sleeps if s >= 0.5]
    bounds = [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (2.0, 4.0), (2.0, 4.0)]  # min(initial * 2^(n-1), max) * [0.5, 1)
    assert len(backoffs) == 5
    assert all(lo <= s < hi for s, (lo, hi) in zip(backoffs, bounds)), backoffs


@pytest.mark.parametrize(
    "faults, config, response, error, requests_for_victim, cached",
    [
        pytest.param([Fault.empty()], {"on_empty": "accept"}, "", None, 1, True, id="empty-accepted"),
        pytest.param([Fault.empty()], {"on_empty": "fail"}, None, "empty", 1, False, id="empty-fails"),
        pytest.param([Fault.empty()] * 3, {"invalid_retries": 1}, None, "empty", 2, False, id="empty-retries-exhausted"),
        pytest.param([Fault.truncated()], {"on_truncated": "fail"}, None, "truncated", 1, False, id="truncated-fails"),
        pytest.param([Fault.status_code(500)] * 3, {"max_attempts": 3}, None, "server_error", 3, False, id="attempts-exhausted"),
        pytest.param([Fault.status_code(429)] * 2, {"max_attempts": 2}, None, "rate_limited", 2, False, id="429-exhausted"),
    ],
)
def test_invalid_answers_and_exhausted_retries_follow_the_config(
    server, sentences, annotate, faults, config, response, error, requests_for_victim, cached, tmp_path
):
    srv = server(script={VICTIM: faults})
    result, table = annotate(make_config(srv.base_url, max_failed_share=0.5, **config), sentences(N))
    row = table.to_pylist()[2]
    assert row["response"] == response
    assert (row["error"] or "").split(":")[0] == (error or "")
    assert srv.requests_per_sentence()[VICTIM] == requests_for_victim
    assert dict(result.stats.failures) == ({error: 1} if error else {})
    # A failed answer is never cached: a rerun asks for exactly that sentence again.
    before = srv.request_count
    annotate(make_config(srv.base_url, max_failed_share=0.5, **config), sentences(N), out="rerun")
    assert srv.request_count - before == (0 if cached else 1 + len(faults[requests_for_victim:]))


def test_too_many_failures_fail_the_stage_and_a_rerun_asks_only_for_those(server, sentences, annotate):
    srv = server(script={VICTIM: [Fault.status_code(500)] * 2})
    with pytest.raises(StageError, match=r"1 of 5 sentences failed.*server_error"):
        annotate(make_config(srv.base_url, max_attempts=2), sentences(N))
    assert srv.request_count == N + 1
    result, table = annotate(make_config(srv.base_url, max_attempts=2), sentences(N), out="rerun")
    assert srv.request_count == N + 2  # only the failed sentence, answered now
    assert result.stats.cache_hits == N - 1 and table.column("error").null_count == N


@pytest.mark.parametrize(
    "server_options, config, status, must_say",
    [
        pytest.param({"api_key": "sk-the-right-one"}, {}, 401, ["401", "rejected", "$NUNER_TEST_LLM_KEY"], id="401-bad-key"),
        pytest.param({"models": ("other-model",)}, {}, 404, ["404", "test-model", "annotate.base_url"], id="404-unknown-model"),
        pytest.param({"fault_for": lambda i, s: Fault.status_code(400, message="max_tokens is too large")}, {}, 400,
                     ["400", "max_tokens is too large", "Retrying cannot fix"], id="400-bad-request"),
        pytest.param({"fault_for": lambda i, s: Fault.status_code(403, message="no access")}, {}, 403,
                     ["403", "no access"], id="403-forbidden"),
    ],
)
def test_unfixable_errors_stop_the_stage_at_once(server, sentences, annotate, server_options, config, status, must_say, tmp_path):
    srv = server(**server_options)
    with pytest.raises(StageError) as err:
        annotate(make_config(srv.base_url, max_in_flight=4, **config), sentences(200))
    message = str(err.value)
    for text in must_say:
        assert text in message
    assert KEY not in message
    assert srv.request_count == 1  # until the endpoint accepts one request, one at a time: the error costs one
    with ResponseCache(tmp_path / "cache") as cache:
        assert cache.count_answers() == 0


def test_missing_key_variable_stops_before_any_request(server, sentences, annotate):
    srv = server()
    with pytest.raises(StageError, match="NUNER_TEST_LLM_KEY is not set"):
        annotate(make_config(srv.base_url), sentences(N), environ={})
    assert srv.request_count == 0
