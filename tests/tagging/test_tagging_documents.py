"""Reading documents and label lists, writing tagged JSON lines."""

from __future__ import annotations

import gzip
import json

import pytest

from nuner_core.stage_api import StageError
from nuner_core.tagging import Document, DocumentError, LabelError, parse_labels, read_documents, read_label_file, tag_documents
from nuner_core.tagging.documents import ReadStats, iter_documents
from nuner_core.tagging.settings import clean_labels


def test_plain_text_is_a_document_per_line(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_bytes("\ufeffAlice in Paris\r\n\n   \n  indented stays\nlast line without newline".encode())
    stats = ReadStats()
    docs = list(iter_documents(path, stats=stats))
    assert docs == [Document(1, "Alice in Paris"), Document(4, "  indented stays"), Document(5, "last line without newline")]
    assert (stats.lines, stats.documents, stats.blank_lines) == (5, 3, 2)


def test_json_lines_with_and_without_ids(tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [{"id": "a", "text": "Alice"}, {"text": "no id", "other": 1}, {"id": 7, "text": ""}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert read_documents(path) == [Document("a", "Alice"), Document(2, "no id"), Document(7, "")]
    gz = tmp_path / "docs.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read_documents(gz) == read_documents(path)
    other = tmp_path / "docs.ndjson"
    other.write_text(json.dumps({"body": "hi"}) + "\n")
    assert read_documents(other, text_field="body") == [Document(1, "hi")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"text": "ok"}\n{"text": broken}\n', "docs.jsonl:2: not JSON"),
        (b'[{"text": "a"}]\n', "docs.jsonl:1: expected a JSON object"),
        (b'[\n  {"text": "a"}\n]\n', "docs.jsonl:1: not JSON .*a JSON array"),
        (b'{"text": "ok"}\n\n{"body": "x"}\n', "docs.jsonl:3: no 'text' field \\(fields: body\\)"),
        (b'{"text": 5}\n', "docs.jsonl:1: 'text' must be a string, not int"),
        (b'{"text": "a", "id": true}\n', "docs.jsonl:1: 'id' must be a string or an integer"),
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "docs.jsonl:2: not UTF-8"),
    ],
)
def test_bad_json_lines_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(content)
    with pytest.raises(DocumentError, match=message) as info:
        read_documents(path)
    assert isinstance(info.value, StageError)


def test_missing_input_file(tmp_path):
    with pytest.raises(DocumentError, match="no such file"):
        read_documents(tmp_path / "nope.txt")


@pytest.mark.parametrize(
    ("value", "labels"),
    [
        ("person, dish, price", ["person", "dish", "price"]),
        ("  person ,, dish , person ,", ["person", "dish"]),
        (["person, dish", "price", "dish"], ["person", "dish", "price"]),
        ("x", ["x"]),
        ("restaurant name,Restaurant_Name", ["restaurant name"]),  # one label, matched ignoring case and "_"
    ],
)
def test_parse_labels(value, labels):
    assert parse_labels(value) == labels


@pytest.mark.parametrize("value", ["", " , ,", [], [" ", ","]])
def test_empty_label_lists_fail(value):
    with pytest.raises(LabelError, match="no labels"):
        parse_labels(value)


def test_label_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("person\n\n dish \nperson\n")
    assert read_label_file(path) == ["person", "dish"]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(LabelError, match="no labels"):
        read_label_file(tmp_path / "empty.txt")


class Recorder:
    def __init__(self):
        self.calls = []

    def update(self, done, total, note=""):
        self.calls.append((done, total))


def test_tag_documents_writes_json_lines_and_counts(tmp_path, planted):
    docs = [Document(1, "Alice ate pizza in Paris"), Document("b", ""), Document(3, "Bob  flew to New York and Tokyo")]
    progress = Recorder()
    out = tmp_path / "out" / "tagged.jsonl"
    summary = tag_documents(planted, docs, ["city", "food", "person", "x", "city"], 0.5, out, progress, batch_size=2)
    assert summary.documents == 3 and summary.entities == 6
    assert summary.per_label == {"city": 3, "food": 1, "person": 2, "x": 0}
    assert summary.threshold == 0.5 and summary.words == 12
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [1, "b", 3]
    assert records[1]["entities"] == []
    third = records[2]
    assert [(e["text"], e["label"], e["start"], e["end"]) for e in third["entities"]] == [
        ("Bob", "person", 0, 3), ("New York", "city", 13, 21), ("Tokyo", "city", 26, 31),
    ]  # fmt: skip
    assert all(r["text"][e["start"] : e["end"]] == e["text"] for r in records for e in r["entities"])
    assert set(third["entities"][0]) == {"start", "end", "text", "label", "score"}
    assert progress.calls[0] == (2, 3) and progress.calls[-1] == (3, 3)
    assert [p.name for p in out.parent.iterdir()] == ["tagged.jsonl"]  # no partial file left


def test_tag_documents_uses_the_model_threshold(tmp_path, planted):
    summary = tag_documents(planted, iter([Document(1, "Alice in Paris")]), ["person"], None, tmp_path / "t.jsonl")
    assert summary.threshold == planted.threshold


@pytest.mark.parametrize("value", ["city, \u200b", "\u200b\u200d", "person, \ufeff \u2060", "x, \x00"])
def test_a_label_of_only_invisible_characters_is_refused(value):
    with pytest.raises(LabelError, match="invisible characters"):
        parse_labels(value)


def test_a_binary_label_file_is_one_error_naming_the_line(tmp_path):
    path = tmp_path / "labels.bin"
    path.write_bytes(b"person\n\x89PNG\xff\n")
    with pytest.raises(LabelError, match=r"labels\.bin:2: not UTF-8"):
        read_label_file(path)


def test_forty_thousand_labels_are_cleaned_in_well_under_a_second():
    """Cleaning was quadratic (a list searched for every label): 40,000 labels took 10 s."""
    import time

    labels = [f"label {i}" for i in range(40_000)] + ["label 0"]
    started = time.perf_counter()
    cleaned = clean_labels(labels)
    assert time.perf_counter() - started < 1.0  # about 0.05 s
    assert len(cleaned) == 40_000 and cleaned[:2] == ["label 0", "label 1"]
