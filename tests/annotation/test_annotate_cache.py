"""The response cache: what a hit is, what keys it, imports, budget stops and offline runs."""

from __future__ import annotations

import asyncio
import json

import pyarrow.parquet as pq
import pytest
from annotate_helpers import MODEL, make_config, sentence, write_sentences
from fake_openai import Fault, default_answer

from nuner_core.annotation.accounting import usd
from nuner_core.annotation.cache import ResponseCache, response_key
from nuner_core.annotation.cache_import import ImportFileError, import_responses
from nuner_core.annotation.prompt import load_template
from nuner_core.stage_api import StageError


def test_second_run_is_served_from_the_cache_without_requests(server, sentences, annotate):
    srv = server()
    first, table1 = annotate(make_config(srv.base_url), sentences(20))
    second, table2 = annotate(make_config(srv.base_url), sentences(20), out="again")
    assert (first.stats.requests, second.stats.requests, srv.request_count) == (20, 0, 20)
    assert second.stats.cache_hits == 20
    assert table2.column("from_cache").to_pylist() == [True] * 20
    assert table1.column("response").to_pylist() == table2.column("response").to_pylist()
    # tokens reported when the answer was made are kept with it
    assert table2.column("prompt_tokens").to_pylist() == table1.column("prompt_tokens").to_pylist()


@pytest.mark.parametrize(
    "change, new_requests",
    [
        pytest.param({}, 0, id="same-everything"),
        pytest.param({"base_url": "other"}, 0, id="other-endpoint-same-key"),
        pytest.param({"requests_per_minute": 10, "max_in_flight": 1, "api_key_env": "OTHER"}, 0, id="run-settings-not-in-key"),
        pytest.param({"temperature": 0.7}, 6, id="temperature"),
        pytest.param({"max_tokens": 100}, 6, id="max-tokens"),
        pytest.param({"top_p": 0.9}, 6, id="top-p"),
        pytest.param({"model": "another-model"}, 6, id="model"),
    ],
)
def test_cache_key_is_model_prompt_and_sampling_not_the_endpoint(server, sentences, annotate, change, new_requests):
    first = server()
    second = server()
    annotate(make_config(first.base_url), sentences(6))
    change = dict(change)
    if change.get("base_url") == "other" or "base_url" not in change:
        change["base_url"] = second.base_url
    environ = {"NUNER_TEST_LLM_KEY": "sk-test-7f3a9c2e51b84d06-DO-NOT-LEAK", "OTHER": "sk-test-7f3a9c2e51b84d06-DO-NOT-LEAK"}
    result, _ = annotate(make_config(**change), sentences(6), out="second", environ=environ)
    assert second.request_count == new_requests
    assert result.stats.cache_hits == 6 - new_requests


def test_custom_prompt_template_is_sent_and_keys_the_cache(server, sentences, annotate, tmp_path):
    template = tmp_path / "my_prompt.txt"
    template.write_text("List the entities.\nInput: [INPUT SENTENCE]\n")
    srv = server()
    result, table = annotate(make_config(srv.base_url, prompt_template=str(template)), sentences(3))
    assert result.stats.requests == 3
    assert table.column("prompt_version").to_pylist()[0].startswith("my_prompt-")
    annotate(make_config(srv.base_url), sentences(3), out="builtin")  # the built-in prompt is another key
    assert srv.request_count == 6


def test_identical_sentences_in_flight_share_one_request(server, tmp_path, annotate):
    srv = server(latency_s=0.05)
    texts = [sentence(0), sentence(1), sentence(0), sentence(0), sentence(2)]
    result, table = annotate(make_config(srv.base_url), write_sentences(tmp_path / "dup.parquet", texts))
    assert srv.request_count == 3
    assert table.column("response").to_pylist() == [default_answer(t) for t in texts]
    assert (result.stats.answered, result.stats.shared) == (3, 2)


def test_import_fills_the_cache_under_the_model_name_and_is_idempotent(server, sentences, annotate, tmp_path):
    records = tmp_path / "recorded.jsonl"
    with records.open("w") as fh:
        for i in range(8):
            fh.write(json.dumps({"id": f"x{i}", "text": sentence(i), "response": f"answer {i}"}) + "\n")
    config = make_config("http://127.0.0.1:9/v1")
    first = import_responses(records, model=MODEL, config=config, cache_dir=tmp_path / "cache")
    again = import_responses(records, model=MODEL, config=config, cache_dir=tmp_path / "cache")
    assert (first.lines, first.added, again.skipped_already_imported, again.added) == (8, 8, True, 0)

    srv = server()
    result, table = annotate(make_config(srv.base_url), sentences(10))
    assert srv.request_count == 2  # the two sentences not in the file
    assert table.column("response").to_pylist()[:8] == [f"answer {i}" for i in range(8)]

    # a different file with other answers for cached prompts keeps what is cached unless told to overwrite
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": sentence(0), "response": "new"}) + "\n" + json.dumps({"text": sentence(9), "response": "x"}) + "\n")
    kept = import_responses(other, model=MODEL, config=config, cache_dir=tmp_path / "cache")
    assert (kept.kept_existing, kept.replaced) == (2, 0)
    replaced = import_responses(other, model=MODEL, config=config, cache_dir=tmp_path / "cache", overwrite=True)
    assert replaced.replaced == 2
    with ResponseCache(tmp_path / "cache") as cache:
        key = response_key(MODEL, load_template(None).messages(sentence(0)), config.sampling())
        assert cache.get(key).response == "new"


@pytest.mark.parametrize(
    "line, problem",
    [
        ("{not json", "not JSON"),
        ('{"text": "a \\ud800 b", "response": "x"}', "lone surrogate"),  # would fail later, hashing the prompt
        ("\udcff\udcfe binary", "not UTF-8"),  # written with surrogateescape: the raw bytes ff fe
        ('["a", "b"]', "expected a JSON object"),
        ('{"response": "x"}', "'text' must be a non-empty string"),
        ('{"text": "a b c", "response": null}', "'response' must be a string"),
    ],
)
def test_import_names_the_bad_line(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "fine", "response": "ok"}) + "\n" + line + "\n", errors="surrogateescape")
    with pytest.raises(ImportFileError, match=f"bad.jsonl:2: .*{problem}"):
        import_responses(path, model=MODEL, cache_dir=tmp_path / "cache")


def test_max_requests_stops_cleanly_and_a_bigger_budget_continues(server, sentences, annotate):
    srv = server(latency_s=0.01)
    with pytest.raises(StageError, match=r"budget: max_requests=10 reached.*a cap per run"):
        annotate(make_config(srv.base_url, max_requests=10), sentences(30))
    assert srv.request_count == 10
    result, table = annotate(make_config(srv.base_url, max_requests=100), sentences(30), out="more")
    assert (result.stats.cache_hits, result.stats.requests) == (10, 20)
    assert dict(srv.answered_per_sentence()) == {sentence(i): 1 for i in range(30)}
    assert table.column("error").null_count == 30


def test_max_cost_is_never_exceeded(server, sentences, annotate):
    srv = server()
    # $1,000 per million prompt tokens, completions free: a request costs about $0.04 here.
    prices = {MODEL: {"input_per_mtok": 1000.0, "output_per_mtok": 0.0}}
    with pytest.raises(StageError, match=r"max_cost=\$0.2000 reached"):
        annotate(make_config(srv.base_url, max_cost=0.2, prices=prices), sentences(20))
    template = load_template(None)
    spent = sum(len(template.render(r.sentence)) // 4 * 1000 / 1e6 for r in srv.records() if r.answered)  # the server's usage
    assert 0 < srv.request_count < 20 and 0 < spent <= 0.2
    result, _ = annotate(make_config(srv.base_url, max_cost=5.0, prices=prices), sentences(20), out="more")
    assert result.stats.cache_hits + result.stats.requests == 20 and result.stats.cache_hits == srv.request_count - result.stats.requests
    assert result.stats.cost_usd <= 5.0


def test_budget_waits_for_requests_in_flight_and_ends_within_one_request_of_the_cap(server, sentences, annotate):
    """Worst cases far above actual costs must not stop the run at a fraction of the cap (issue 11, item 2)."""
    srv = server(latency_s=0.01)
    # Completions only, $1,000 per million tokens: a request's worst case (512 tokens) is $0.512, an
    # actual answer (~15 tokens) about $0.015. Four in flight reserve $2.05 between them.
    prices = {MODEL: {"input_per_mtok": 0.0, "output_per_mtok": 1000.0}}
    cap, worst = 1.0, 512 * 1000 / 1e6
    with pytest.raises(StageError) as err:
        annotate(make_config(srv.base_url, max_cost=cap, prices=prices, max_in_flight=4), sentences(80))
    spent = sum(len(default_answer(r.sentence)) // 4 * 1000 / 1e6 for r in srv.records() if r.answered)  # the server's usage
    assert cap - worst < spent <= cap  # within one worst-case request of the cap, never past it
    assert srv.request_count > 25  # not the 2 requests of "stop at the first refusal"
    message = str(err.value)
    assert "max_cost=$1.0000 reached" in message and f"this run spent {usd(spent)} in {srv.request_count} requests" in message
    result, _ = annotate(make_config(srv.base_url, max_cost=5.0, prices=prices), sentences(80), out="more")
    assert result.stats.cache_hits == srv.request_count - result.stats.requests  # the rest, from the cache
    assert result.stats.cost_usd <= 5.0 and "budget_waits" in result.summary()


def test_offline_lists_missing_sentences_and_makes_no_request(server, sentences, annotate, tmp_path):
    srv = server()
    annotate(make_config(srv.base_url), sentences(4))  # 4 of 10 cached
    with pytest.raises(StageError, match=r"offline: 6 of 10 sentences have no cached answer") as err:
        annotate(make_config(srv.base_url, offline=True), sentences(10), out="offline")
    assert srv.request_count == 4
    missing = [json.loads(line) for line in (tmp_path / "work" / "missing-sentences.jsonl").read_text().splitlines()]
    assert [m["text"] for m in missing] == [sentence(i) for i in range(4, 10)]
    assert "nuner cache import" in str(err.value)

    result, table = annotate(make_config(srv.base_url, offline=True, allow_partial=True), sentences(10), out="partial")
    assert srv.request_count == 4 and result.missing == 6
    assert table.column("response").null_count == 6
    assert table.column("error").to_pylist()[4].startswith("not_cached")


def test_offline_needs_no_key_and_no_server(sentences, annotate, tmp_path):
    records = tmp_path / "recorded.jsonl"
    records.write_text("".join(json.dumps({"text": sentence(i), "response": f"a{i}"}) + "\n" for i in range(5)))
    config = make_config(None, offline=True, api_key_env=None, import_responses=str(records))
    result, table = annotate(config, sentences(5), environ={})
    assert (result.stats.cache_hits, result.stats.requests, result.import_stats.added) == (5, 0, 5)
    assert table.column("response").to_pylist() == [f"a{i}" for i in range(5)]


def test_rows_keep_input_order_in_bounded_shards(server, sentences, annotate, tmp_path):
    srv = server(script={sentence(0): [Fault.slow(0.3)]})  # the first sentence is answered last
    result, table = annotate(make_config(srv.base_url, shard_size=4), sentences(10))
    assert table.column("text").to_pylist() == [sentence(i) for i in range(10)]
    assert pq.ParquetFile(tmp_path / "out" / "responses.parquet").metadata.num_row_groups == 3 == result.shards


def test_runs_from_inside_a_running_event_loop(server, sentences, annotate):
    srv = server()

    async def notebook_cell():
        return annotate(make_config(srv.base_url), sentences(3))

    result, table = asyncio.run(notebook_cell())
    assert result.stats.answered == 3 and table.num_rows == 3
