"""Every client mistake of issue 22 item 3: the right 4xx, one clear message naming the field (and the cap); never a 500."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from nuner_core.serving.app import create_app
from nuner_core.serving.limits import Limits

LIMITS = Limits(max_body_bytes=4_000, max_texts=3, max_chars=100, max_labels=4, timeout_s=30)
OK = {"model": "planted", "texts": ["Alice ate pizza."], "labels": ["person", "food"]}


def body(**changes) -> str:
    return json.dumps({**OK, **changes})


# (case, route, raw body, status, field, words of the message)
CASES = [
    ("malformed JSON", "/v1/tag", '{"model": "planted",', 400, None, "malformed JSON"),
    ("not an object", "/v1/tag", "[1, 2]", 422, None, "must be a JSON object"),
    ("empty body", "/v1/tag", "", 422, None, "no request body"),
    ("unknown model", "/v1/tag", body(model="nope"), 404, "model", "no model 'nope'; served: clf, planted"),
    ("classifier on /v1/tag", "/v1/tag", body(model="clf"), 422, "model", "use /v1/predict"),
    ("zero-shot on /v1/predict", "/v1/predict", json.dumps({"model": "planted", "texts": ["a"]}), 422, "model", "use /v1/tag"),
    ("missing labels", "/v1/tag", json.dumps({"model": "planted", "texts": ["a"]}), 422, "labels", "missing field"),
    ("empty labels", "/v1/tag", body(labels=[]), 422, "labels", "no labels"),
    ("invisible label", "/v1/tag", body(labels=["\u200b"]), 422, "labels", "non-empty string"),
    ("non-string label", "/v1/tag", body(labels=["person", 3]), 422, "labels[1]", "valid string"),
    ("non-string text", "/v1/tag", body(texts=["fine", 7]), 422, "texts[1]", "valid string"),
    ("texts not a list", "/v1/tag", body(texts="Alice"), 422, "texts", "valid list"),
    ("no texts", "/v1/tag", body(texts=[]), 422, "texts", "no texts"),
    ("lone surrogate in a text", "/v1/tag", '{"model": "planted", "texts": ["ok", "a\\ud800b"], "labels": ["x"]}', 422, "texts[1]",
     "lone surrogate (U+D800) at character 1"),
    ("lone surrogate in a label", "/v1/tag", '{"model": "planted", "texts": ["ok"], "labels": ["\\udfff"]}', 422, "labels[0]", "lone surrogate"),
    ("threshold out of range", "/v1/tag", body(threshold=1.5), 422, "threshold", "probability in [0, 1]"),
    ("threshold not a number", "/v1/tag", body(threshold="high"), 422, "threshold", "valid number"),
    ("threshold true", "/v1/tag", body(threshold=True), 422, "threshold", "valid number"),
    ("per-label threshold for no label", "/v1/tag", body(thresholds={"city": 0.2}), 422, "thresholds", "match no label"),
    ("per-label threshold of 0", "/v1/tag", body(thresholds={"person": 0}), 422, "thresholds", "in (0, 1)"),
    ("unknown decoding", "/v1/tag", body(decoding="greedy"), 422, "decoding", "'words' or 'spans'"),
    ("unknown field", "/v1/tag", body(lables=["x"]), 422, "lables", "unknown field"),
    ("too many texts", "/v1/tag", body(texts=["a", "b", "c", "d"]), 422, "texts", "4 texts; at most 3"),
    ("text too long", "/v1/tag", body(texts=["ok", "x" * 101]), 422, "texts[1]", "101 characters; at most 100"),
    ("too many labels", "/v1/tag", body(labels=["a", "b", "c", "d", "e"]), 422, "labels", "5 labels; at most 4"),
    ("body too large", "/v1/tag", body(texts=["x" * 2_000, "y" * 2_000]), 413, "body", "over 4,000 bytes"),
]
LIMITED = {"too many texts": 3, "text too long": 100, "too many labels": 4, "body too large": 4_000}


@pytest.fixture(scope="module")
def limited(planted_model, classifier_model):
    with TestClient(create_app([planted_model, classifier_model], LIMITS)) as client:
        yield client


@pytest.mark.parametrize("case, route, raw, status, field, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_its_status_and_one_clear_message(limited, case, route, raw, status, field, message):
    response = limited.post(route, content=raw.encode("utf-8", "surrogatepass"), headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()
    assert message in error["error"] and error["field"] == field, error
    assert error.get("limit") == LIMITED.get(case)


def test_a_streamed_body_over_the_cap_is_413_too(limited):
    def chunks():
        yield b'{"model": "planted", "texts": ["'
        for _ in range(10):
            yield b"x" * 1_000
        yield b'"], "labels": ["x"]}'

    response = limited.post("/v1/tag", content=chunks(), headers={"content-type": "application/json"})  # no Content-Length
    assert response.status_code == 413 and response.json()["limit"] == 4_000


def test_after_every_bad_request_the_server_still_answers(limited):
    for _, route, raw, *_ in CASES:
        limited.post(route, content=raw.encode("utf-8", "surrogatepass"), headers={"content-type": "application/json"})
    response = limited.post("/v1/tag", json=OK)
    assert response.status_code == 200 and response.json()["results"][0]["entities"]
    metrics = limited.get("/metrics").text
    assert 'status="500"' not in metrics and 'nuner_serve_requests_total{route="/v1/tag",status="413"}' in metrics
