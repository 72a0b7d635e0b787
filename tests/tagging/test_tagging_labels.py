"""Label normalisation, per-label thresholds and span-consistent decoding (issue 21, items 2 and 5)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from nuner_core.evaluation.zero_shot import label_names, score_at
from nuner_core.iob2.conll import Sentence
from nuner_core.tagging import parse_labels
from nuner_core.tagging.decode import decode_entities, decode_spans, span_runs
from nuner_core.tagging.labels import label_thresholds, normalise_label, parse_threshold_option
from nuner_core.text.words import segment_words


@pytest.mark.parametrize(
    ("label", "key"),
    [("Person", "person"), ("PERSON", "person"), ("date_of_birth", "date of birth"), ("Date-Of--Birth", "date of birth"),
     ("  new \t york ", "new york"), ("e_mail", "e mail"), ("Straße", "strasse")],
)  # fmt: skip
def test_normalise_label(label, key):
    assert normalise_label(label) == key


def test_spellings_of_one_label_count_once_and_keep_the_first():
    assert parse_labels("Person, person, PERSON, date_of_birth, date of birth") == ["Person", "date_of_birth"]
    assert parse_labels("person, _-_, -") == ["person", "_-_", "-"]  # separators alone stay a label


def test_person_PERSON_person_give_the_same_entities_and_vectors(planted):
    text = ["Alice ate pizza in Paris."]
    seen = []
    for spelling in ("Person", "PERSON", "person"):
        entities = planted.predict(text, [spelling, "city"], threshold=0.5)[0]
        assert [e.label for e in entities] == [spelling, "city"]  # the user's spelling comes back
        seen.append([(e.start, e.end, e.score) for e in entities])
    assert seen[0] == seen[1] == seen[2]
    vectors = [planted.label_vectors([spelling]) for spelling in ("date_of_birth", "Date of Birth", "date-of-birth")]
    assert torch.equal(vectors[0], vectors[1]) and torch.equal(vectors[0], vectors[2])
    assert planted.label_vectors(["date_of_birth", "date of birth"]).shape[0] == 1  # one label, two spellings


def test_evaluation_label_names_use_the_same_normalisation():
    assert label_names(["Restaurant_Name", "DATE-of-birth"]) == ["restaurant name", "date of birth"]
    with pytest.raises(ValueError, match="both become the label 'person'"):
        label_names(["PER", "person"], {"PER": "Person"})


def test_threshold_per_label_decoding():
    text = "Alice met Bob"
    spans = segment_words(text)
    best, prob = np.array([0, 1, 0]), np.array([0.2, 0.2, 0.05])
    limits = label_thresholds(["Person", "city"], 0.1, {"PERSON": 0.15, "city": 0.3})
    assert limits.tolist() == [0.15, 0.3]
    found = decode_entities(text, spans, best, prob, ["Person", "city"], limits)
    assert [(e.text, e.label) for e in found] == [("Alice", "Person")]  # met: city 0.2 < 0.3; Bob: 0.05 < 0.15


def test_tagger_thresholds_per_label(planted):
    text = ["Alice ate pizza in Paris."]
    assert [e.label for e in planted.predict(text, ["person", "city"], threshold=0.5)[0]] == ["person", "city"]
    only_people = planted.predict(text, ["person", "city"], threshold=0.5, thresholds={"CITY": 0.99})[0]
    assert [e.label for e in only_people] == ["person"]  # planted p = 0.92
    for bad, message in (({"city": 1.5}, "in \\(0, 1\\)"), ({"city": float("nan")}, "in \\(0, 1\\)"), ({"town": 0.1}, "match no label")):
        with pytest.raises(ValueError, match=message):
            planted.predict(text, ["person", "city"], thresholds=bad)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("0.05", (0.05, {})), ("person=0.1,date=0.03", (None, {"person": 0.1, "date": 0.03})),
     ("0.05, person=0.1", (0.05, {"person": 0.1})), ("date_of_birth=0.2", (None, {"date_of_birth": 0.2}))],
)  # fmt: skip
def test_parse_threshold_option(value, parsed):
    assert parse_threshold_option(value) == parsed


@pytest.mark.parametrize("value", ["person=2", "person=x", "0.1,0.2", "person=0.1,Person=0.2", ",", "=0.1"])
def test_parse_threshold_option_refuses(value):
    with pytest.raises(ValueError):
        parse_threshold_option(value)


def test_spans_one_entity_for_a_mention_whose_words_prefer_different_labels():
    text = "The European Central Bank raised rates in Frankfurt Tuesday"
    spans = segment_words(text)
    labels = ["city", "organization", "company", "date"]
    probs = np.zeros((len(spans), len(labels)))
    probs[1] = [0.50, 0.40, 0.30, 0.0]  # European: city first, but organization and company pass too
    probs[2] = [0.10, 0.60, 0.40, 0.0]  # Central: organization
    probs[3] = [0.05, 0.45, 0.55, 0.0]  # Bank: company
    probs[7] = [0.90, 0.02, 0.01, 0.0]  # Frankfurt: city only ...
    probs[8] = [0.01, 0.01, 0.00, 0.8]  # ... Tuesday: date only: two strong labels meet, the run is cut
    words = decode_entities(text, spans, probs.argmax(1), probs.max(1), labels, 0.2)
    assert [(e.text, e.label) for e in words] == [("European", "city"), ("Central", "organization"), ("Bank", "company"),
                                                  ("Frankfurt", "city"), ("Tuesday", "date")]  # fmt: skip
    found = decode_spans(text, spans, probs, labels, 0.2)
    assert [(e.text, e.label) for e in found] == [("European Central Bank", "organization"), ("Frankfurt", "city"), ("Tuesday", "date")]
    assert found[0].score == pytest.approx((0.40 + 0.60 + 0.45) / 3)
    assert span_runs(np.zeros((0, 4)), 0.2) == [] and span_runs(probs, 0.95) == []


def test_spans_decoding_through_the_tagger_and_the_evaluation(planted):
    text = ["Bob flew to New York with Marie."]
    found = planted.predict(text, ["city", "person"], threshold=0.5, decoding="spans")[0]
    assert [(e.text, e.label) for e in found] == [("Bob", "person"), ("New York", "city"), ("Marie", "person")]
    with pytest.raises(ValueError, match="decoding"):
        planted.predict(text, ["city"], decoding="chars")  # type: ignore[arg-type]
    sentence = Sentence(("European", "Central", "Bank"), ("B-ORG", "I-ORG", "I-ORG"))
    probs = [np.array([[0.5, 0.4], [0.1, 0.6], [0.1, 0.7]])]  # columns: LOC, ORG
    assert score_at(probs, [sentence], ["LOC", "ORG"], 0.2, "words").entity_micro_f1 == 0.0
    assert score_at(probs, [sentence], ["LOC", "ORG"], 0.2, "spans").entity_micro_f1 == pytest.approx(1.0)


def test_nuner_tag_threshold_per_label_and_spans(planted_dir, tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("Alice ate pizza in New York.\n")

    def tag(*args):
        return subprocess.run([sys.executable, "-m", "flows.cli", "tag", "--model", str(planted_dir), "--labels", "City, person",
                               str(docs), "-o", str(tmp_path / "out.jsonl"), *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip

    out = tag("--threshold", "0.5,city=0.99", "--decoding", "spans")
    assert out.returncode == 0, out.stderr
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert [(e["text"], e["label"]) for e in row["entities"]] == [("Alice", "person")]
    assert "at threshold 0.5, city 0.99, spans decoding" in out.stderr
    bad = tag("--threshold", "town=0.1")
    assert bad.returncode == 2 and "match no label" in bad.stderr and "Traceback" not in bad.stderr
