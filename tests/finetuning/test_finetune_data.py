"""Words, spans -> IOB2 tags (exact, repaired, rejected, counted), JSON lines vs CoNLL, the label checks, benchmark data."""

from __future__ import annotations

import json
import re

import pytest
from finetune_helpers import toy_records, write_conll, write_jsonl

from nuner_core.finetuning.config import BenchmarkData, FilesData
from nuner_core.finetuning.data import DataFormatError, SpanCounts, load_data, read_jsonl, spans_to_tags
from nuner_core.iob2.conll import TypeNames
from nuner_core.stage_api import StageError
from nuner_core.text.words import segment_words


@pytest.mark.parametrize(
    "text, words",
    [
        ("Paris, France.", ["Paris", ",", "France", "."]),
        ("state-of-the-art don't 3.5 1,000 U.S.",
         ["state", "-", "of", "-", "the", "-", "art", "don", "'", "t", "3", ".", "5", "1", ",", "000", "U", ".", "S", "."]),  # nuner tag's words
        ("  (New York)  ", ["(", "New", "York", ")"]),
        ("email: a_b@x.org", ["email", ":", "a_b", "@", "x", ".", "org"]),
        ("", []),
    ],
)
def test_json_lines_text_is_split_into_nuner_tag_words(text, words):
    assert [text[s:e] for s, e in segment_words(text).tolist()] == words


TEXT = "Anna Lee moved to New York City, then to Paris."
#       0    5   9     15 18  22   27   32    38 41    47


@pytest.mark.parametrize(
    "spans, repair, tags, counts",
    [
        # exact spans, one and several words
        ([(0, 8, "per"), (18, 31, "loc")], "snap", "B-per I-per O O B-loc I-loc I-loc O O O O O", {"exact": 2}),
        # inside a word ("ew Yo"), across a word boundary mid-word ("Lee mo"): snapped to the words they touch
        ([(19, 24, "loc"), (5, 11, "per")], "snap", "O B-per I-per O B-loc I-loc O O O O O O", {"snapped": 2}),
        # the same, rejected
        ([(19, 24, "loc"), (5, 11, "per")], "reject", "O O O O O O O O O O O O", {"rejected": {"off_word_boundary": 2}}),
        # whitespace around is trimmed, then exact
        ([(40, 46, "loc")], "snap", "O O O O O O O O O O B-loc O", {"exact": 1, "whitespace_trimmed": 1}),
        # overlapping: the earlier (then longer) stays; nested one rejected
        ([(18, 31, "loc"), (22, 26, "city")], "snap", "O O O O B-loc I-loc I-loc O O O O O", {"exact": 2, "rejected": {"overlaps_another_span": 1}}),
        # outside the text, empty, whitespace only
        ([(40, 99, "x"), (5, 5, "x"), (32, 33, "x")], "snap", "O O O O O O O O O O O O",
         {"rejected": {"invalid_offsets": 2, "whitespace_only": 1}}),
    ],
)  # fmt: skip
def test_spans_to_tags(spans, repair, tags, counts):
    got = SpanCounts()
    words, out = spans_to_tags(TEXT, spans, repair, got)
    assert [TEXT[s:e] for s, e in words] == ["Anna", "Lee", "moved", "to", "New", "York", "City", ",", "then", "to", "Paris", "."]
    assert out == tags.split()
    expected = {"exact": 0, "snapped": 0, "whitespace_trimmed": 0, "rejected": {}} | counts
    assert {k: v for k, v in got.as_dict().items() if k in expected} == expected
    assert got.spans == len(spans)


def test_jsonl_and_conll_of_the_same_data_give_the_same_sentences(tmp_path):
    records = toy_records(30, seed=3)
    jsonl = write_jsonl(tmp_path / "d.jsonl", records)
    conll_rows = []
    for r in records:
        words, tags = spans_to_tags(r["text"], [(e["start"], e["end"], e["label"].upper()) for e in r["entities"]], "snap", SpanCounts())
        conll_rows.append(([r["text"][s:e] for s, e in words], [t if t == "O" else t[:2] + t[2:] for t in tags]))
    conll = write_conll(tmp_path / "d.conll", conll_rows)  # types upper-case here: the same types, case-insensitively
    from_jsonl = load_data(FilesData(train=str(jsonl), dev=str(conll)), "snap")
    from_conll = load_data(FilesData(train=str(conll), dev=str(jsonl)), "snap")
    assert from_jsonl.train == from_jsonl.dev  # one spelling per type across formats (the first seen)
    assert [s.tokens for s in from_conll.train] == [s.tokens for s in from_jsonl.train]
    assert [[t.lower() for t in s.tags] for s in from_conll.train] == [[t.lower() for t in s.tags] for s in from_jsonl.train]
    assert from_jsonl.labels == ["O", "B-city", "I-city", "B-day", "I-day", "B-person", "I-person"]
    assert sum(from_jsonl.stats["train"]["mentions"].values()) == sum(len(r["entities"]) for r in records)


def test_repairs_and_rejections_reach_the_dropped_counts(tmp_path):
    rows = [
        {"text": "Anna went to Berlin.", "entities": [{"start": 0, "end": 4, "label": "per"}, {"start": 14, "end": 19, "label": "loc"}]},
        {"text": "   ", "entities": [{"start": 0, "end": 2, "label": "per"}]},
        {"text": "Bob met Anna.", "entities": [{"start": 0, "end": 3, "label": "per"}, {"start": 0, "end": 12, "label": "per"}]},
    ]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    for repair, loc in (("snap", {"loc": 1}), ("reject", {})):
        data = load_data(FilesData(train=str(path)), repair)
        reader = data.stats["train"]["reader"]
        assert reader["records"] == 3 and reader["spans"] == 5 and reader["records_dropped"] == {"no_words": 1}
        assert data.stats["train"]["mentions"] == {"per": 2} | loc
        expected = {"spans_whitespace_only": 1, "records_no_words": 1, "spans_overlaps_another_span": 1}
        if repair == "reject":
            expected["spans_off_word_boundary"] = 1
        assert data.dropped == expected


def test_a_dev_or_test_label_missing_from_train_is_an_error_naming_it_and_the_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "Anna lives in Rome.", "entities": [{"start": 0, "end": 4, "label": "person"}]}])
    test = write_conll(tmp_path / "test.bio", [(["Anna", "lives", "in", "Rome"], ["B-person", "O", "O", "B-city"])])
    with pytest.raises(StageError, match=r"test data .*test\.bio has label\(s\) .*'city' \(1 mention\)"):
        load_data(FilesData(train=str(train), test=str(test)), "snap")
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"text": "No entity here.", "entities": []}])
    with pytest.raises(StageError, match="no entity mention"):
        load_data(FilesData(train=str(empty)), "snap")
    with pytest.raises(StageError, match="does not exist"):
        load_data(FilesData(train=str(tmp_path / "nope.jsonl")), "snap")


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not JSON"),
        (json.dumps({"entities": []}), "string 'text'"),
        (json.dumps({"text": "a", "entities": [{"start": 0, "end": "1", "label": "x"}]}), "integer 'start', 'end'"),
        (json.dumps({"text": "a", "entities": [{"start": 0, "end": 1, "label": " "}]}), "non-empty string 'label'"),
        (json.dumps({"text": "a", "entities": {"start": 0}}), "must be a list"),
    ],
)
def test_jsonl_format_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "fine", "entities": []}) + "\n\n" + line + "\n")
    with pytest.raises(DataFormatError, match=rf"bad\.jsonl:3: .*{message}"):
        read_jsonl(path, "snap", TypeNames())


def test_benchmark_data_support_set_dev_and_test_subsamples():
    source = BenchmarkData(name="mit_restaurant", k=4, dev_size=30, test_size=40)
    data = load_data(source, "snap")
    support = data.stats["train"]["support_set"]
    assert all(4 <= n <= 8 for n in support["counts"].values()) and not support["shortfall"]
    assert len(data.dev) == 30 and len(data.test) == 40
    assert not set(data.dev) & set(data.train)
    assert data.types == sorted(support["counts"])
    assert load_data(source, "snap").train == data.train  # seeded


@pytest.mark.parametrize("label, message", [("O", "tag for no entity"), ("B-LOC", "give the type ('LOC')"), ("i-per", "give the type ('per')")])
def test_a_json_lines_label_that_is_an_iob2_tag_is_refused(tmp_path, label, message):
    """Such labels became tags B-O and B-B-LOC."""
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "Anna in Paris", "entities": [{"start": 8, "end": 13, "label": label}]}])
    with pytest.raises(DataFormatError, match=rf"train\.jsonl:1: entity label '{label}' is .*{re.escape(message)}"):
        read_jsonl(path, "snap", TypeNames())


def test_spans_to_tags_is_linear_in_words_and_spans():
    """It was O(words x spans): 10,000 one-word spans over 10,000 words took seconds."""
    import time

    n = 10_000
    text = " ".join(f"w{i}" for i in range(n))
    words = segment_words(text).tolist()
    spans = [(s, e, "x") for s, e in words] + [(words[0][0], words[-1][1], "y")]  # the long one overlaps them all
    started = time.perf_counter()
    got = SpanCounts()
    _, tags = spans_to_tags(text, spans, "snap", got)
    assert time.perf_counter() - started < 1.0  # about 0.05 s
    assert tags[0] == "B-y" and tags[1:] == ["I-y"] * (n - 1)
    assert got.exact == n + 1 and got.rejected == {"overlaps_another_span": n}
