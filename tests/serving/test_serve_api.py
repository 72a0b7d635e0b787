"""`nuner serve`'s routes in process (FastAPI's TestClient): the same entities as `nuner tag`, the models list, health."""

from __future__ import annotations

import json
import subprocess
import sys

TEXTS = ["Alice ate pizza in Paris.", "Bob flew to New York with Marie.", "nothing here", "Zebra cafe in Tokyo and London."]
LABELS = ["city", "person", "Food", "x"]


def test_v1_tag_gives_exactly_what_nuner_tag_gives(client, planted_dir, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    for threshold, decoding in (("0.5", None), ("0.5", "words"), ("0.3,city=0.8", "spans")):  # None: both take their default
        option = [] if decoding is None else ["--decoding", decoding]
        out = subprocess.run([sys.executable, "-m", "flows.cli", "tag", "--model", str(planted_dir), "--labels", ", ".join(LABELS),
                              "--threshold", threshold, *option, str(docs)], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        expected = [json.loads(line)["entities"] for line in out.stdout.splitlines()]
        body = {"model": "planted", "texts": TEXTS, "labels": LABELS, "threshold": float(threshold.split(",")[0])}
        if decoding is not None:
            body["decoding"] = decoding
        if "city=" in threshold:
            body["thresholds"] = {"city": 0.8}
        response = client.post("/v1/tag", json=body)
        assert response.status_code == 200, response.text
        got = response.json()
        assert got["model"] == "planted"
        assert [r["entities"] for r in got["results"]] == expected
        assert any(expected), "the comparison must see entities"


def test_v1_tag_default_threshold_is_the_models_and_entities_have_offsets(client):
    response = client.post("/v1/tag", json={"model": "planted", "texts": ["Alice ate pizza in Paris."], "labels": ["person", "food", "city"]})
    assert response.status_code == 200, response.text
    entities = response.json()["results"][0]["entities"]
    assert [(e["text"], e["label"]) for e in entities] == [("Alice", "person"), ("pizza", "food"), ("Paris", "city")]
    for e in entities:
        assert set(e) == {"start", "end", "text", "label", "score"} and "Alice ate pizza in Paris."[e["start"]:e["end"]] == e["text"]


def test_models_healthz_readyz_docs(client):
    models = client.get("/v1/models").json()["models"]
    assert models == [{"name": "planted", "kind": "zero_shot", "base_encoder": "bert", "threshold": 0.5, "labels": [], "card": None}]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "models": ["planted"]}
    assert client.get("/docs").status_code == 200
    assert "/v1/tag" in client.get("/openapi.json").json()["paths"]
