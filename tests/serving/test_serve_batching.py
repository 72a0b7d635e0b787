"""The batcher merges concurrent requests into one tagger call and cuts the answers back per request; the label cache
is bounded and shared; /metrics is Prometheus text; /v1/predict is the fine-tuned classifier's own tagging."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from nuner_core.serving.app import create_app
from nuner_core.serving.batcher import Batcher, ZeroShotOptions
from nuner_core.tagging.label_cache import LabelCache
from nuner_core.tagging.plan import TagStats

WORDS = ["Alice", "Bob", "Marie", "Paris", "London", "Tokyo", "pizza", "pasta", "bread", "Berlin"]


def _texts(i: int) -> list[str]:
    """Request i's texts: its own words, so a text that landed in another answer would show."""
    return [f"{WORDS[i % 10]} met {WORDS[(i + 3) % 10]} today.", f"number {i} visited {WORDS[(i + 5) % 10]}"][: 1 + i % 2]


def _rounded(answers: list) -> list:
    return [[[{**e, "score": round(e["score"], 5)} for e in row] for row in answer] for answer in answers]


def test_concurrent_requests_share_one_call_and_never_mix(planted_model):
    labels = ("person", "city", "food")
    expected = [[[e.as_dict() for e in row] for row in planted_model.predictor.predict(_texts(i), list(labels), 0.5)] for i in range(12)]

    async def run() -> tuple[list, Batcher]:
        batcher = Batcher(max_batch_tokens=100_000, max_wait_s=0.5)  # every request arrives within the wait
        await batcher.start()
        options = ZeroShotOptions(labels, 0.5)
        other = ZeroShotOptions(("person",), 0.5)  # another label set: its own call in the same batch
        futures = [batcher.submit(planted_model, options, _texts(i)) for i in range(12)]
        odd = batcher.submit(planted_model, other, ["Alice and Paris"])
        answers = await asyncio.gather(*futures, odd)
        await batcher.stop()
        return answers, batcher

    answers, batcher = asyncio.run(run())
    assert _rounded(answers[:12]) == _rounded(expected)  # float32 products of another batch shape differ in the last bits
    assert [e["text"] for e in answers[12][0]] == ["Alice"]
    assert batcher.calls == 2 and batcher.requests == 13  # 13 requests, 2 tagger calls (one per label set)


def test_a_small_token_budget_splits_the_queue_and_answers_stay_in_order(planted_model):
    async def run() -> tuple[list, Batcher]:
        batcher = Batcher(max_batch_tokens=20, max_wait_s=0.2)
        await batcher.start()
        options = ZeroShotOptions(("person", "city"), 0.5)
        answers = await asyncio.gather(*(batcher.submit(planted_model, options, _texts(i)) for i in range(6)))
        await batcher.stop()
        return answers, batcher

    answers, batcher = asyncio.run(run())
    assert batcher.calls > 1 and batcher.requests == 6
    for i, answer in enumerate(answers):
        assert len(answer) == len(_texts(i))
        for text, entities in zip(_texts(i), answer):
            assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)


def test_the_label_cache_is_a_bounded_lru_that_counts_hits():
    stats = TagStats()
    cache: LabelCache[int] = LabelCache(stats, max_labels=3)
    embedded: list[list[str]] = []

    def embed(missing: list[str]) -> dict[str, int]:
        embedded.append(missing)
        return {label: len(label) for label in missing}

    assert cache.lookup(["a", "bb", "a"], embed) == [1, 2, 1] and embedded == [["a", "bb"]]
    assert cache.lookup(["bb", "ccc", "dddd"], embed) == [2, 3, 4]  # "a" is the least recently used: dropped
    assert len(cache) == 3 and "a" not in cache and stats.label_cache_hits == 1 and stats.labels_encoded == 4
    assert cache.lookup(["e", "f", "g", "h", "i"], embed) == [1, 1, 1, 1, 1]  # more than it holds, in one call: still answered
    assert len(cache) == 3


def test_the_servers_label_cache_is_shared_and_bounded(planted_dir):
    from nuner_core.serving.models import load_model

    model = load_model("small", str(planted_dir), device="cpu", max_labels=5)
    with TestClient(create_app([model], warm_labels=["person", "city"])) as client:
        for labels in (["person", "city"], ["food", "person"], ["a", "b", "c", "d", "e", "f"]):
            assert client.post("/v1/tag", json={"model": "small", "texts": ["Alice in Paris"], "labels": labels}).status_code == 200
        metrics = {s.name: s.value for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples}
    assert metrics["nuner_serve_label_cache_size"] == 5
    assert metrics["nuner_serve_label_cache_hits_total"] == 3  # person, city from the warm-up; person again
    assert metrics["nuner_serve_label_cache_misses_total"] == 2 + 1 + 6


def test_metrics_parse_as_prometheus_text(client):
    for _ in range(3):
        client.post("/v1/tag", json={"model": "planted", "texts": ["Alice in Paris"], "labels": ["person"]})
    client.post("/v1/tag", json={"model": "nope", "texts": ["a"], "labels": ["x"]})
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    for name in ("nuner_serve_requests", "nuner_serve_request_seconds", "nuner_serve_batch_texts", "nuner_serve_batch_requests",
                 "nuner_serve_queue_depth", "nuner_serve_label_cache_hits"):
        assert name in families, sorted(families)
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["nuner_serve_requests"].samples if s.name.endswith("_total")}
    assert requests[("/v1/tag", "200")] == 3 and requests[("/v1/tag", "404")] == 1
    assert families["nuner_serve_queue_depth"].samples[0].value == 0


def test_v1_predict_is_the_classifiers_own_tagging(classifier_model, planted_model):
    texts = ["Alice flew from Paris to Tokyo on Monday.", "Bob", "a much longer text " * 20]
    with TestClient(create_app([classifier_model, planted_model])) as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        response = client.post("/v1/predict", json={"model": "clf", "texts": texts})
    assert models["clf"]["kind"] == "token_classifier" and models["clf"]["labels"] == ["city", "person"]
    assert models["clf"]["threshold"] is None
    assert response.status_code == 200, response.text
    assert [r["entities"] for r in response.json()["results"]] == classifier_model.predictor.tag(texts)
