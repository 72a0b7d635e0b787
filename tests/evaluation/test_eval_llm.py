"""The llm competitor end to end: the evaluate stage, the real openai client, a local OpenAI-compatible server
answering from the gold tags (tests/fake_openai.py), with configurable errors.

What is checked: the prompts the server receives, scores equal to the metrics on the parsed predictions,
the parser's counts, the accounting (requests, cache hits, cost per 1,000 sentences from the reported
usage), a rerun served from the cache with zero requests, budget stops (max_requests, max_cost) that
publish an incomplete artifact whose rerun asks only for the rest, retried and failed requests, key errors.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import polars as pl
import pytest
from fake_openai import FakeOpenAIServer, Fault

from nuner_core.config import ConfigError, load_config
from nuner_core.evaluation.benchmarks import load_benchmark, resolve_spec
from nuner_core.evaluation.frozen import word_labels
from nuner_core.evaluation.llm_prompt import INPUT, NONE, gold_answer, sentence_text
from nuner_core.iob2.conll import Sentence, mentions
from nuner_core.iob2.metrics import entity_micro_f1, token_macro_f1
from nuner_core.pipeline import key_config, plan, run_stage
from nuner_core.stage_api import StageError
from nuner_core.store import ArtifactStore, open_store

MODEL = "fake-model"
PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}


def tiny_spec(tiny_benchmark) -> dict[str, Any]:
    return {"name": "tiny", "source": {"kind": "files", **tiny_benchmark}}


def llm(url: str, **extra) -> dict[str, Any]:
    """Fast settings: high limits, short backoffs, a price for the fake model."""
    return {"name": "fake-llm", "model": MODEL, "base_url": url, "api_key_env": None, "prices": {MODEL: PRICE},
            "requests_per_minute": 60_000, "tokens_per_minute": None, "max_in_flight": 4, "request_timeout_s": 5.0,
            "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **extra}


def overrides(tiny_benchmark, llms, encoders=(), **extra) -> dict[str, Any]:
    return {
        "evaluate.encoders": list(encoders), "evaluate.use_pretrain": False,
        "evaluate.benchmarks": [tiny_spec(tiny_benchmark)], "evaluate.max_test_sentences": 30,
        "evaluate.frozen.enabled": bool(encoders), "evaluate.frozen.ks": [1, 2], "evaluate.frozen.seeds": 1,
        "evaluate.zero_shot.enabled": False, "evaluate.num_threads": 1,
        "evaluate.llms": llms, "evaluate.llm.ks": [1, 2], "evaluate.llm.seeds": 1, **extra,
    }


def evaluate(store: ArtifactStore, config):
    (step,) = plan(config, ["evaluate"], store)
    ref = run_stage(step, {}, store)
    return ref, ref.manifest()


def test_sentences(tiny_benchmark) -> list[Sentence]:
    """The 30 test sentences the stage scores (the same seeded subsample)."""
    config = load_config("demo", overrides(tiny_benchmark, [])).evaluate
    return load_benchmark(resolve_spec(config.benchmarks[0]), 30, 0).test.sentences


test_sentences.__test__ = False  # a helper, not a test


def answering(sentences: list[Sentence], answer: Callable[[int, Sentence], str] | None = None) -> Callable[[list], str]:
    """The server's answer: from the gold tags of the test sentence the prompt ends with (``answer`` may spoil it)."""
    index = {sentence_text(s): (i, s) for i, s in enumerate(sentences)}

    def respond(messages: list) -> str:
        i, s = index[messages[-1]["content"].removeprefix(INPUT)]
        return answer(i, s) if answer else gold_answer(s)

    return respond


@pytest.fixture
def server():
    started: list[FakeOpenAIServer] = []

    def start(**kwargs: Any) -> FakeOpenAIServer:
        srv = FakeOpenAIServer(**kwargs).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return open_store(tmp_path / "data")


def fake_cost(record, respond: Callable[[list], str]) -> float:
    """What the fake server reports for a request (its usage rule: characters of the messages / 4), at PRICE."""
    prompt = sum(len(m["content"]) for m in record.messages)
    content = respond(record.messages)
    return (max(1, prompt // 4) * PRICE["input_per_mtok"] + max(0, len(content) // 4) * PRICE["output_per_mtok"]) / 1e6


def test_gold_answers_score_as_the_metrics_say_and_a_rerun_costs_nothing(server, store, tiny_benchmark, tmp_path):
    sentences = test_sentences(tiny_benchmark)
    respond = answering(sentences)
    srv = server(answer_request=respond)
    shared = {"evaluate.cache_dir": str(tmp_path / "eval-cache")}
    spec = llm(srv.base_url, cache_dir=str(tmp_path / "llm-cache"))
    ref, manifest = evaluate(store, load_config("demo", overrides(tiny_benchmark, [spec], **shared)))

    # 2 cells (k = 1, 2) x 30 test sentences, each one request with the support set as worked examples.
    assert srv.request_count == 60
    results = pl.read_parquet(ref.dir / "results.parquet")
    assert sorted(set(zip(results["protocol"], results["metric"]))) == [("llm", "token_macro_f1"),
                                                                      ("llm_entity", "entity_micro_f1")]
    assert results["test_sentences"].unique().to_list() == [30]
    # Scores equal the encoders' metric functions on the parsed predictions (llm_answers.parquet).
    answers = pl.read_parquet(ref.dir / "llm_answers.parquet")
    assert answers.height == 60 and answers["error"].null_count() == 60
    types = manifest["evaluate"]["benchmarks"][0]["types"]
    for k in (1, 2):
        part = answers.filter(pl.col("k") == k).sort("test_index")
        gold = [sentences[i] for i in part["test_index"]]
        pred = [Sentence(s.tokens, tuple(p)) for s, p in zip(gold, part["predicted"].to_list())]
        entity = entity_micro_f1([s.tags for s in gold], [s.tags for s in pred])[0]
        token = token_macro_f1(word_labels(gold, types), word_labels(pred, types), types)[0]
        row = {r["protocol"]: r["value"] for r in results.filter(pl.col("k") == k).iter_rows(named=True)}
        assert row == {"llm": token, "llm_entity": entity}
        assert entity > 0.97  # gold answers parse back (but for a word tagged at one occurrence only)

    # The prompts: system + worked examples of the support set (its gold answers) + the test sentence, no test label.
    support = pl.read_parquet(ref.dir / "support_sets.parquet").filter(pl.col("k") == 1).sort("position")
    examples = [Sentence(tuple(t), tuple(g)) for t, g in zip(support["tokens"], support["tags"])]
    for record in srv.records():
        messages = record.messages
        test = sentences[[sentence_text(s) for s in sentences].index(record.sentence)]
        assert messages[0]["role"] == "system" and ", ".join(types) in messages[0]["content"]
        assert messages[-1] == {"role": "user", "content": INPUT + sentence_text(test)}
        if len(messages) == 2 + 2 * len(examples):
            assert [m["content"] for m in messages[2:-1:2]] == [gold_answer(e) for e in examples]
        if len(mentions(test.tags)) >= 2:
            assert gold_answer(test) not in json.dumps(messages, ensure_ascii=False).replace("\\n", "\n")

    # Accounting: requests, cost per 1,000 sentences from the usage the server reported, at the configured price.
    info = manifest["evaluate"]
    run = info["llms"][0]["run"]
    assert (run["requests"], run["answered"], run["cache_hits"], run["failed"]) == (60, 60, 0, 0)
    cells = {c["k"]: c for c in info["llm_cells"]}
    total = sum(fake_cost(r, respond) for r in srv.records())
    assert sum(c["cost_usd"] for c in cells.values()) == pytest.approx(total, rel=1e-9)
    assert run["cost_usd"] == pytest.approx(total, abs=1e-6)
    assert all(c["usd_per_1k"] == pytest.approx(1000 * c["cost_usd"] / 30, rel=1e-6) for c in cells.values())
    assert all(c["time_measured"] == "this run" and c["s_per_1k"] > 0 for c in cells.values())
    summary = (ref.dir / "summary.md").read_text()
    assert "## LLM in context vs the encoders" in summary and "| tiny | 1 | **fake-llm** (LLM) |" in summary
    assert "## llm: LLM in context" in summary and "## llm_entity:" in summary
    assert (ref.dir / "f1_vs_k_llm.png").exists() or (ref.dir / "f1_vs_k.png").exists()
    assert "incomplete" not in manifest

    # A rerun elsewhere (another artifact store, the same response cache): no request, the same scores and figures.
    again, manifest2 = evaluate(open_store(tmp_path / "other"), load_config("demo", overrides(tiny_benchmark, [spec], **shared)))
    assert srv.request_count == 60
    run2 = manifest2["evaluate"]["llms"][0]["run"]
    assert (run2["requests"], run2["cache_hits"], run2["cost_usd"]) == (0, 60, 0.0)
    assert pl.read_parquet(again.dir / "results.parquet")["value"].to_list() == results["value"].to_list()
    cells2 = {c["k"]: c for c in manifest2["evaluate"]["llm_cells"]}
    assert [cells2[k]["usd_per_1k"] for k in (1, 2)] == [cells[k]["usd_per_1k"] for k in (1, 2)]  # what tagging costs
    assert all(c["time_measured"] == "an earlier run" and c["s_per_1k"] == cells[c["k"]]["s_per_1k"] for c in cells2.values())
    assert "(earlier run)" in (again.dir / "summary.md").read_text()


def spoil(i: int, s: Sentence) -> str:
    """Six kinds of answer, by test sentence: casing, an invented entity, garbage, empty, other type spellings, duplicates."""
    gold = gold_answer(s)
    lines = [] if gold == NONE else gold.splitlines()
    kind = i % 6
    if kind == 0:
        return "\n".join(line.split(" <> ")[0].upper() + " <> " + line.split(" <> ")[1] for line in lines) or NONE
    if kind == 1:
        return "\n".join(lines + ["atlantis <> Location"])
    if kind == 2:
        return "Sure! The entities are listed below."
    if kind == 3:
        return ""
    if kind == 4:
        return "\n".join([line.split(" <> ")[0] + " <> " + line.split(" <> ")[1].lower().replace("_", " ") for line in lines]
                         + ["pluto <> Planet"])
    return "\n".join(line for line in lines for _ in range(2)) or NONE


def test_every_kind_of_answer_is_parsed_counted_and_scored(server, store, tiny_benchmark):
    sentences = test_sentences(tiny_benchmark)
    srv = server(answer_request=answering(sentences, spoil))
    # (frozen.enabled with no encoder at all: only the LLM is scored, nothing else is drawn)
    config = load_config("demo", overrides(tiny_benchmark, [llm(srv.base_url)], **{"evaluate.llm.ks": [1],
                                                                                  "evaluate.frozen.enabled": True}))
    ref, manifest = evaluate(store, config)
    assert set(pl.read_parquet(ref.dir / "results.parquet")["protocol"]) == {"llm", "llm_entity"}
    parse = manifest["evaluate"]["llms"][0]["parse"]
    groups = {kind: [s for i, s in enumerate(sentences) if i % 6 == kind] for kind in range(6)}
    lines = {kind: sum(len(mentions(s.tags)) for s in group) for kind, group in groups.items()}
    with_entities = {kind: sum(1 for s in group if mentions(s.tags)) for kind, group in groups.items()}
    assert parse["answers"] == 30  # every answer parsed, none crashed the run
    assert manifest["dropped"]["llm_unparsable"] == parse["unparsable"] and manifest["dropped"]["llm_sentences_not_scored"] == 0
    assert parse["unparsable"] == len(groups[2])
    assert parse["empty"] == len(groups[3])
    assert parse["not_in_sentence"] == len(groups[1])
    assert parse["unknown_type"] == len(groups[4])
    assert parse["type_normalised"] == sum(1 for s in groups[4] for _, _, t in mentions(s.tags) if t.lower().replace("_", " ") != t)
    assert parse["extra_listings"] == lines[5]
    assert parse["case_insensitive"] == sum(len({" ".join(s.tokens[a:b]) for a, b, _ in mentions(s.tags)}) for s in groups[0])
    assert parse["none"] == sum(len(g) - with_entities[k] for k, g in groups.items() if k in (0, 5))
    # Scored as the metric says on what was parsed: garbage and empty answers are "no entity".
    answers = pl.read_parquet(ref.dir / "llm_answers.parquet").sort("test_index")
    pred = [tuple(p) for p in answers["predicted"]]
    assert all(p == ("O",) * len(s.tokens) for p, s in zip(pred, sentences) if sentences.index(s) % 6 in (2, 3))
    entity = entity_micro_f1([s.tags for s in sentences], pred)[0]
    results = pl.read_parquet(ref.dir / "results.parquet")
    assert results.filter(pl.col("protocol") == "llm_entity")["value"].to_list() == [entity]
    assert 0.3 < entity < 0.9
    assert answers.filter(pl.col("test_index") % 6 == 2)["unparsable"].to_list() == [1] * len(groups[2])
    summary = (ref.dir / "summary.md").read_text()
    assert f"{len(groups[2])} unparsable" in summary and f"{len(groups[1])} not in the sentence" in summary


@pytest.mark.parametrize("cap", ["max_requests", "max_cost"])
def test_a_budget_stops_cleanly_scores_what_is_done_and_the_rerun_asks_only_for_the_rest(server, store, tiny_benchmark, cap):
    sentences = test_sentences(tiny_benchmark)
    srv = server(answer_request=answering(sentences))
    # max_cost: $10 per million prompt tokens, prompts of some 150-400 tokens (the support set's examples): a
    # request that does not fit waits for the others, and the run stops when the spend plus one worst case would
    # pass the cap.
    limits = {"max_requests": 25} if cap == "max_requests" else {
        "max_cost": 0.04, "prices": {MODEL: {"input_per_mtok": 10.0, "output_per_mtok": 0.0}}, "max_tokens": 16}
    config = load_config("demo", overrides(tiny_benchmark, [llm(srv.base_url, **limits)]))
    ref, manifest = evaluate(store, config)

    done = srv.request_count
    assert 0 < done < 60
    if cap == "max_requests":
        assert done == 25
    info = manifest["evaluate"]
    run = info["llms"][0]["run"]
    assert info["llms"][0]["stopped"].startswith(cap)
    assert run["not_requested"] == 60 - done and run["answered"] == done
    if cap == "max_cost":
        assert run["cost_usd"] <= 0.04
    assert manifest["incomplete"]["llm_sentences_not_scored"] == 60 - done
    scored = {c["k"]: c["scored"] for c in info["llm_cells"]}
    assert sum(scored.values()) == done
    results = pl.read_parquet(ref.dir / "results.parquet")
    assert {r["k"]: r["test_sentences"] for r in results.iter_rows(named=True)} == {k: n for k, n in scored.items() if n}
    summary = (ref.dir / "summary.md").read_text()
    assert f"{scored[1]:,} of 30" in summary or scored[1] == 30
    assert "**Incomplete**" in summary and f"not_requested: {60 - done}" in summary

    # The same config with a larger budget: the incomplete artifact is rebuilt; only the rest is asked for.
    bigger = {**limits, "max_requests": 1000} if cap == "max_requests" else {**limits, "max_cost": 10.0}
    ref2, manifest2 = evaluate(store, load_config("demo", overrides(tiny_benchmark, [llm(srv.base_url, **bigger)])))
    assert ref2.key == ref.key  # the budget is not part of the key
    assert srv.request_count == 60
    run2 = manifest2["evaluate"]["llms"][0]["run"]
    assert (run2["requests"], run2["cache_hits"]) == (60 - done, done)
    assert "incomplete" not in manifest2
    assert dict(srv.answered_per_sentence()) == {sentence_text(s): 2 for s in sentences}  # each prompt answered once


def test_retries_and_failures_are_counted_and_failed_sentences_asked_again(server, store, tiny_benchmark):
    sentences = test_sentences(tiny_benchmark)
    flaky, broken = sentence_text(sentences[3]), sentence_text(sentences[7])
    script = {flaky: [Fault.status_code(429, retry_after=0), Fault.malformed()], broken: [Fault.status_code(500)] * 4}
    srv = server(answer_request=answering(sentences), script=script)
    config = load_config("demo", overrides(tiny_benchmark, [llm(srv.base_url, max_attempts=2)]))
    ref, manifest = evaluate(store, config)
    run = manifest["evaluate"]["llms"][0]["run"]
    # flaky, first cell: a 429 (retried), then a malformed answer (its 2nd attempt: given up, max_attempts=2);
    # broken: a 500 and a 500 in each cell (one retry each, then given up). Both succeed later (the script runs out).
    assert run["retries_by_reason"] == {"rate_limited": 1, "server_error": 2}
    assert run["failures_by_reason"] == {"malformed": 1, "server_error": 2}
    assert manifest["incomplete"]["llm_sentences_not_scored"] == 3
    cells = {c["k"]: c for c in manifest["evaluate"]["llm_cells"]}
    assert sum(c["scored"] for c in cells.values()) == 57
    assert "server_error: 2" in (ref.dir / "summary.md").read_text()
    # The next run asks for exactly the three failed ones (the script's faults are used up: they succeed).
    before = srv.request_count
    _, manifest2 = evaluate(store, config)
    assert srv.request_count - before == 3
    assert "incomplete" not in manifest2


def test_key_errors_name_the_llm_and_never_show_the_key(server, store, tiny_benchmark, monkeypatch):
    srv = server(answer_request=lambda messages: NONE, api_key="sk-the-right-key-123456")
    monkeypatch.delenv("NUNER_TEST_LLM_KEY", raising=False)
    config = load_config("demo", overrides(tiny_benchmark, [llm(srv.base_url, api_key_env="NUNER_TEST_LLM_KEY")]))
    with pytest.raises(StageError, match=r"evaluate.llms\[fake-llm\] needs an API key: .*NUNER_TEST_LLM_KEY"):
        evaluate(store, config)
    assert srv.request_count == 0
    monkeypatch.setenv("NUNER_TEST_LLM_KEY", "sk-a-wrong-key-9876543")
    with pytest.raises(StageError) as failed:
        evaluate(store, config)
    assert "HTTP 401" in str(failed.value) and "evaluate.llms[fake-llm]" in str(failed.value)
    assert "sk-a-wrong-key-9876543" not in str(failed.value)
    assert srv.request_count == 1  # the first request goes alone: a wrong key costs one request


def test_the_llm_beside_an_encoder_same_sentences_cost_and_time(server, store, tiny_benchmark, tiny_encoders):
    sentences = test_sentences(tiny_benchmark)
    srv = server(answer_request=answering(sentences))
    config = load_config("demo", overrides(tiny_benchmark, [llm(srv.base_url)], [{"name": "a", "model": tiny_encoders["a"]}],
                                           **{"evaluate.sampling.method": "kw"}))
    ref, manifest = evaluate(store, config)
    info = manifest["evaluate"]
    results = pl.read_parquet(ref.dir / "results.parquet")
    frozen = {r["k"]: r["value"] for r in results.filter(pl.col("protocol") == "frozen").iter_rows(named=True)}
    rows = {(c["competitor"], c["k"]): c for c in info["llm_comparison"]}
    for k in (1, 2):
        encoder, model = rows[("a", k)], rows[("fake-llm", k)]
        assert encoder["token"][0] == pytest.approx(100 * frozen[k])  # all 30 answered: the frozen table's figure
        assert encoder["usd_per_1k"] == 0.0 and encoder["s_per_1k"] > 0 and encoder["time_measured"] == "this run"
        assert model["usd_per_1k"] > 0 and model["s_per_1k"] > 0 and model["scored"] == 30
    summary = (ref.dir / "summary.md").read_text()
    assert "| tiny | 1 | a (encoder) |" in summary and "| local |" in summary
    assert "k_w~2k_w" in summary and "words per entity type" in summary
    support = pl.read_parquet(ref.dir / "support_sets.parquet")
    for k in (1, 2):  # k_w sampling: every type has k..2k entity words in the support set (or fell short)
        words: dict[str, int] = {}
        for tags in support.filter(pl.col("k") == k)["tags"]:
            for tag in tags:
                if tag != "O":
                    words[tag[2:]] = words.get(tag[2:], 0) + 1
        assert all(n <= 2 * k for n in words.values()) and max(words.values()) >= k, words


def test_config_refuses_what_an_llm_cannot_use_and_keeps_run_settings_out_of_the_key(tiny_benchmark):
    base = overrides(tiny_benchmark, [llm("http://127.0.0.1:9/v1")])
    with pytest.raises(ConfigError, match="prompt_template is an annotate setting"):
        load_config("demo", {**base, "evaluate.llms": [llm("http://x/v1", prompt_template="p.txt")]})
    with pytest.raises(ConfigError, match=r"evaluate.llms\[fake-llm\]: max_cost is set but prices has no entry"):
        load_config("demo", {**base, "evaluate.llms": [llm("http://x/v1", max_cost=1.0, prices={})]})
    with pytest.raises(ConfigError, match="LLM names must be unique"):
        load_config("demo", {**base, "evaluate.encoders": [{"name": "fake-llm", "model": "m"}]})
    with pytest.raises(ConfigError, match="llm.benchmarks"):
        load_config("demo", {**base, "evaluate.llm.benchmarks": ["nope"]})
    config = load_config("demo", base)
    assert type(config).model_validate(config.model_dump(mode="json")) == config  # a dumped config loads again (flow parameters)
    key = key_config(config.evaluate)
    run_only = {"base_url": "https://user:secret@proxy/v1", "api_key_env": "OTHER", "max_cost": 5.0, "max_requests": 9,
                "max_in_flight": 1, "requests_per_minute": 10, "cache_dir": "/elsewhere", "offline": True}
    assert key_config(load_config("demo", {**base, "evaluate.llms": [llm("http://x/v1", **run_only)]}).evaluate) == key
    for what in ({"model": "other"}, {"temperature": 0.5}, {"max_tokens": 100}):
        changed = llm("http://x/v1", **what) | ({"prices": {"other": PRICE}} if "model" in what else {})
        assert key_config(load_config("demo", {**base, "evaluate.llms": [changed]}).evaluate) != key
    assert load_config("demo").evaluate.llms == () and load_config("paper").evaluate.llms == ()
