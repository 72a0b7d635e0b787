"""`nuner tag` on the command line and the tag stage through the pipeline, on the planted tiny model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nuner_core.config import load_config
from nuner_core.pipeline import plan, run_stage
from nuner_core.store import open_store

TEXTS = ["Alice ate pizza in Paris.", "", "Bob flew to New York with Marie."]


def _nuner(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture
def inputs(tmp_path):
    text = tmp_path / "docs.txt"
    text.write_text("\n".join(TEXTS) + "\n")
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS) if t))
    return text, jsonl


def test_nuner_tag_writes_json_lines_with_offsets(planted_dir, inputs, tmp_path):
    text, _ = inputs
    out = _nuner("tag", "--model", str(planted_dir), "--labels", "city, person, food", "--threshold", "0.5", str(text),
                 "-o", str(tmp_path / "out.jsonl"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 3]  # line numbers; the blank line is skipped
    first = rows[0]
    assert [(e["text"], e["label"]) for e in first["entities"]] == [("Alice", "person"), ("pizza", "food"), ("Paris", "city")]
    for e in first["entities"]:
        assert first["text"][e["start"]:e["end"]] == e["text"] and 0.5 <= e["score"] <= 1
    assert ("New York", "city") in [(e["text"], e["label"]) for e in rows[1]["entities"]]
    assert "2 documents, 6 entities (city 2, person 3, food 1)" in out.stderr


def test_nuner_tag_to_stdout_reads_json_lines(planted_dir, inputs, tmp_path):
    _, jsonl = inputs
    out = _nuner("tag", "--model", str(planted_dir), "--labels", "city", "--threshold", "0.5", str(jsonl), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["d0", "d2"] and rows[0]["entities"][0]["text"] == "Paris"


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing-model", "no such directory"),
        ("single-encoder", "concept_encoder/config.json"),
        ("empty-labels", "no labels"),
        ("missing-input", "no such input file"),
    ],
)
def test_nuner_tag_bad_input_is_one_clear_line(case, message, planted_dir, inputs, tmp_path):
    text, _ = inputs
    model, labels, files = str(planted_dir), "city", [str(text)]
    if case == "missing-model":
        model = str(tmp_path / "nope")
    elif case == "single-encoder":
        model = str(planted_dir / "text_encoder")  # a plain Hugging Face model, not a two-encoder one
    elif case == "empty-labels":
        labels = " , "
    else:
        files = [str(tmp_path / "absent.txt")]
    out = _nuner("tag", "--model", model, "--labels", labels, *files, cwd=tmp_path)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_tag_stage_is_keyed_on_labels_threshold_and_input_content(planted_dir, inputs, tmp_path):
    text, _ = inputs
    store = open_store(tmp_path / "store")
    base = {"tag.model": str(planted_dir), "tag.labels": ["city", "person"], "tag.inputs": [str(text)], "tag.threshold": 0.5}
    config = load_config("demo", base)
    assert [s.stage for s in plan(config, None, store) if s.stage == "tag"] == ["tag"]  # configured: part of a full run
    assert "tag" not in [s.stage for s in plan(load_config("demo"), None, store)]  # not configured: not
    (step,) = plan(config, ["tag"], store)
    ref = run_stage(step, {}, store)
    manifest = ref.manifest()
    assert manifest["rows"] == {"documents": 2, "entities": 5} and manifest["per_label"] == {"city": 2, "person": 3}
    lines = (ref.dir / "entities.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["entities"][0]["label"] == "person"

    def key(**changes):
        return plan(load_config("demo", {**base, **changes}), ["tag"], store)[0].key

    assert key() == step.key
    assert len({step.key, key(**{"tag.labels": ["city"]}), key(**{"tag.threshold": 0.4})}) == 3
    text.write_text("Tokyo.\n")
    assert key() != step.key  # same file name, new content


def test_tag_stage_without_labels_is_a_clear_error(planted_dir, inputs, tmp_path):
    text, _ = inputs
    store = open_store(tmp_path / "store")
    (step,) = plan(load_config("demo", {"tag.model": str(planted_dir), "tag.inputs": [str(text)]}), ["tag"], store)
    with pytest.raises(Exception, match="no labels"):
        run_stage(step, {}, store)


def test_nuner_export_model_onto_the_store_is_one_line_and_deletes_nothing(planted_dir, tmp_path):
    import shutil

    source = tmp_path / "data" / "pretrain" / "0123456789abcdef"
    shutil.copytree(planted_dir, source)
    (tmp_path / "data" / "cache").mkdir()
    (tmp_path / "data" / "cache" / "responses.sqlite").write_bytes(b"paid")
    out = _nuner("export-model", str(source), "data", "--overwrite", cwd=tmp_path)
    assert out.returncode == 1 and "contains the source" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert (tmp_path / "data" / "cache" / "responses.sqlite").read_bytes() == b"paid"


def test_nuner_tag_one_bad_document_names_its_line_and_skip_bad_keeps_the_rest(planted_dir, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "Alice in Paris"}\n{"text": 7}\n{"text": "Bob in Tokyo"}\n')
    out = _nuner("tag", "--model", str(planted_dir), "--labels", "city", "--threshold", "0.5", str(docs),
                 "-o", str(tmp_path / "out.jsonl"), cwd=tmp_path)
    assert out.returncode == 2 and "docs.jsonl:2: 'text' must be a string" in out.stderr and "--skip-bad" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "out.jsonl").exists()
    out = _nuner("tag", "--model", str(planted_dir), "--labels", "city", "--threshold", "0.5", "--skip-bad", str(docs),
                 "-o", str(tmp_path / "out.jsonl"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [1, 3]
    assert "2 documents" in out.stderr and "1 bad line(s) skipped, the first: " in out.stderr and "docs.jsonl:2" in out.stderr


def test_nuner_tag_summary_names_a_few_labels_and_counts_the_rest(planted_dir, inputs, tmp_path):
    text, _ = inputs
    labels = tmp_path / "labels.txt"
    labels.write_text("city\nperson\n" + "".join(f"label{i}\n" for i in range(40)))
    out = _nuner("tag", "--model", str(planted_dir), "--labels-file", str(labels), "--threshold", "0.5", str(text), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = out.stderr.strip().splitlines()[-1]
    assert "(city 2, person 3, label0 0," in summary and "label7 0, and 32 more labels)" in summary and "label8" not in summary


def test_nuner_tag_takes_a_pretrain_artifact_of_the_store(planted_dir, inputs, tmp_path, monkeypatch):
    """`--model pretrain:latest` (what the getting-started page runs after the demo) and `pretrain:<key>`, as `nuner serve`."""
    import shutil

    from flows.cli import main

    text, _ = inputs
    monkeypatch.setenv("NUNER_DATA_DIR", str(tmp_path / "data"))
    assert main(["tag", "--model", "pretrain:latest", "--labels", "city", str(text)]) == 2  # an empty store: a clear error, no model
    store = open_store(tmp_path / "data")
    manifest = {"stage": "pretrain", "base_model": "tiny", "encoders": {"nuner": "text_encoder"}}
    with store.publish("pretrain", "0123456789abcdef", manifest) as out:
        for item in planted_dir.iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy)(item, out / item.name)
    for model in ("pretrain:latest", "pretrain:0123456789abcdef"):
        out_file = tmp_path / f"{model.replace(':', '-')}.jsonl"
        assert main(["tag", "--model", model, "--labels", "city", "--threshold", "0.5", str(text), "-o", str(out_file)]) == 0
        assert "Paris" in out_file.read_text()
    assert main(["tag", "--model", "pretrain:fedcba9876543210", "--labels", "city", str(text)]) == 2  # no such key
