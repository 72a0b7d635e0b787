"""An answer no UTF-8 text can hold (a lone surrogate, ``"\\ud800"`` in the JSON) is an invalid answer, not a crash.

Before, caching it raised ``UnicodeEncodeError``: the stage died with an ``ExceptionGroup``, the
answers in flight were lost, and every rerun paid for that sentence again and died again.
Through the real client against the local fake server, for the annotate stage and the
evaluation's LLM path (the same request path).
"""

from __future__ import annotations

from annotate_helpers import make_config, sentence
from fake_openai import FakeOpenAIServer, Fault, default_answer

from nuner_core.annotation.batches import complete_batches
from nuner_core.annotation.cache import ResponseCache

N = 5
VICTIM = 2


def test_an_answer_with_a_lone_surrogate_is_a_failed_sentence_and_the_rest_is_cached(server, sentences, annotate, tmp_path):
    # Undecodable every time: three answers in the first run (1 + invalid_retries), three in the rerun.
    srv = server(script={sentence(VICTIM): [Fault.lone_surrogate()] * 6})
    config = make_config(srv.base_url, max_failed_share=0.5)

    result, table = annotate(config, sentences(N))

    rows = table.to_pylist()
    assert rows[VICTIM]["response"] is None and rows[VICTIM]["error"].startswith("undecodable:")
    assert [r["response"] for i, r in enumerate(rows) if i != VICTIM] == [default_answer(sentence(i)) for i in range(N) if i != VICTIM]
    assert dict(result.stats.failures) == {"undecodable": 1}
    assert dict(result.stats.retries) == {"undecodable": 2}  # retried like an empty answer (invalid_retries=2)
    assert result.stats.answered == N - 1
    with ResponseCache(tmp_path / "cache") as cache:
        assert cache.count_answers() == N - 1  # every valid answer kept; the undecodable one never written

    # A rerun does not die either: it asks for the failed sentence alone.
    before = srv.request_count
    again, table = annotate(config, sentences(N), out="rerun")
    assert srv.request_count - before == 3
    assert again.stats.cache_hits == N - 1 and dict(again.stats.failures) == {"undecodable": 1}
    assert table.column("error").null_count == N - 1


def test_a_lone_surrogate_once_is_retried_and_the_next_answer_kept(server, sentences, annotate):
    srv = server(script={sentence(VICTIM): [Fault.lone_surrogate()]})
    result, table = annotate(make_config(srv.base_url), sentences(N))
    assert table.column("response").to_pylist() == [default_answer(sentence(i)) for i in range(N)]
    assert dict(result.stats.retries) == {"undecodable": 1} and not result.stats.failures


def test_the_evaluation_llm_path_counts_a_lone_surrogate_as_a_failed_prompt(tmp_path):
    def prompt(i: int) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"Input: {sentence(i)}"}]

    with FakeOpenAIServer(script={sentence(VICTIM): [Fault.lone_surrogate()] * 3}) as srv:
        config = make_config(srv.base_url, api_key_env=None)
        result = complete_batches(config, [[prompt(i) for i in range(N)]], tmp_path / "cache", field="evaluate.llms[gpt]")
    outcomes = result.outcomes[0]
    assert outcomes[VICTIM].content is None and outcomes[VICTIM].reason == "undecodable"
    assert [o.content for i, o in enumerate(outcomes) if i != VICTIM] == [default_answer(sentence(i)) for i in range(N) if i != VICTIM]
    assert dict(result.stats.failures) == {"undecodable": 1}
    with ResponseCache(tmp_path / "cache") as cache:
        assert cache.count_answers() == N - 1
