"""Threshold calibration on the pre-training validation split."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tagging_helpers import PLANTED_BIAS, PLANTED_TAU

from nuner_core.stage_api import StageError
from nuner_core.tagging import calibrate_threshold, segment_words
from nuner_core.tagging.calibrate import CurvePoint, gold_pairs, pick_threshold, threshold_curve

PLANTED_P = 1 / (1 + np.exp(-(PLANTED_TAU + PLANTED_BIAS)))

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("split", pa.string()),
        ("spans", pa.list_(pa.struct([("start", pa.int32()), ("end", pa.int32()), ("concept", pa.string())]))),
    ]
)


def _row(i: int, text: str, split: str, entities: list[tuple[str, str]]) -> dict:
    return {"id": f"s{i}", "text": text, "split": split,
            "spans": [{"start": text.index(e), "end": text.index(e) + len(e), "concept": c} for e, c in entities]}  # fmt: skip


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return path


VALIDATION = [
    ("Alice ate pizza in Paris.", [("Alice", "person"), ("pizza", "food"), ("Paris", "city")]),
    ("Bob flew from New York to Tokyo.", [("Bob", "person"), ("New York", "city"), ("Tokyo", "city")]),
    ("Marie baked bread.", [("Marie", "person"), ("bread", "food"), ("baked", "action")]),  # "baked" is not planted
    ("Nothing much happened.", []),
]


def test_threshold_curve_by_hand():
    prob = np.array([0.9, 0.6, 0.3, 0.1])
    correct = np.array([True, False, True, False])
    curve = threshold_curve(prob, correct, gold=3, thresholds=[0.95, 0.05, 0.5])
    assert [p.threshold for p in curve] == [0.05, 0.5, 0.95]
    assert (curve[0].predicted, curve[0].correct) == (4, 2)
    assert curve[0].precision == pytest.approx(0.5) and curve[0].recall == pytest.approx(2 / 3)
    assert curve[0].f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert curve[1].f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert (curve[2].predicted, curve[2].f1) == (0, 0.0)


@pytest.mark.parametrize(
    ("f1s", "chosen"),
    [([0.2, 0.8, 0.8, 0.8, 0.1], 2), ([0.8, 0.8], 0), ([0.1, 0.3, 0.2], 1), ([0.0, 0.0, 0.0], 1)],
)
def test_pick_threshold_takes_the_middle_of_a_plateau(f1s, chosen):
    curve = [CurvePoint(t / 10, 0, 0, f, 0, 0) for t, f in enumerate(f1s)]
    assert pick_threshold(curve).threshold == chosen / 10


def test_gold_pairs_are_words_inside_spans():
    text = "New York's mayor"
    words = segment_words(text)  # New York ' s mayor
    assert gold_pairs(words, [(0, 8, "city"), (0, 10, "possessive"), (11, 16, "role"), (0, 6, "partial")]) == {
        (0, "city"), (1, "city"), (0, "possessive"), (1, "possessive"), (2, "possessive"), (3, "possessive"),
        (4, "role"), (0, "partial"),  # "York" is only partly inside "New Yo": not gold (pre-training's rule)
    }  # fmt: skip


def test_calibration_on_the_planted_model(tmp_path, planted):
    rows = [_row(i, t, "validation", e) for i, (t, e) in enumerate(VALIDATION)]
    rows.append(_row(99, "Alice lives in London.", "train", [("Alice", "person"), ("London", "city")]))
    path = _write(tmp_path / "dataset" / "annotated.parquet", rows)
    cal = calibrate_threshold(planted, path.parent)  # the artifact directory works too

    assert cal.sentences == 3 and cal.skipped == {"no_concept": 1}
    assert cal.gold_pairs == 10  # New York is two words; "baked" counts as a gold pair the model misses
    assert cal.labels == 4
    # planted pairs score PLANTED_P, every other pair far less: at the chosen threshold the model
    # finds exactly the 9 planted pairs and misses "baked"
    assert PLANTED_P >= cal.threshold > 0.3
    assert (cal.precision, cal.recall) == (1.0, pytest.approx(0.9))
    assert cal.f1 == pytest.approx(2 * 0.9 / 1.9)
    by_t = {p.threshold: p for p in cal.curve}
    assert by_t[0.95].predicted == 0 and by_t[0.95].f1 == 0.0
    assert by_t[0.001].predicted == cal.words == 18  # at 0.001 every word takes some label
    assert by_t[0.001].precision == pytest.approx(9 / 18)


def test_calibration_with_every_concept_as_labels(tmp_path, planted):
    rows = [_row(i, t, "validation", e) for i, (t, e) in enumerate(VALIDATION)]
    rows.append(_row(99, "Alice lives in London.", "train", [("Alice", "person")]))
    cal = calibrate_threshold(planted, _write(tmp_path / "annotated.parquet", rows), label_set="split")
    assert cal.sentences == 4 and cal.labels == 4  # the sentence without a concept is scored too
    assert (cal.precision, cal.recall) == (1.0, pytest.approx(0.9))


def test_calibration_needs_validation_sentences(tmp_path, planted):
    rows = [_row(0, "Alice lives in London.", "train", [("Alice", "person")])]
    with pytest.raises(StageError, match="no validation sentences"):
        calibrate_threshold(planted, _write(tmp_path / "annotated.parquet", rows))


def test_calibration_samples_large_splits(tmp_path, planted):
    rows = [_row(i, "Alice ate pizza.", "validation", [("Alice", "person"), ("pizza", "food")]) for i in range(30)]
    rows.append(_row(99, "Alice lives in London.", "train", [("Alice", "person")]))
    cal = calibrate_threshold(planted, _write(tmp_path / "annotated.parquet", rows), max_sentences=10)
    assert cal.sentences == 10 and cal.skipped == {"not_sampled": 20}
    assert cal.f1 == 1.0


def test_calibration_records_each_frequent_concepts_own_threshold(tmp_path, planted):
    from nuner_core.tagging import ModelCard, check_model_dir, render_model_card

    rows = [_row(i, t, "validation", e) for i, (t, e) in enumerate(VALIDATION)]
    rows.append(_row(99, "Alice lives in London.", "train", [("Alice", "person")]))
    cal = calibrate_threshold(planted, _write(tmp_path / "annotated.parquet", rows), per_concept_min_gold=2)
    assert list(cal.per_concept) == ["city", "person", "food"]  # most gold pairs first; "action" (1 pair) is too rare
    assert all(0.05 < x <= PLANTED_P for x in cal.per_concept.values())  # planted pairs pass, the others stay below
    assert calibrate_threshold(planted, tmp_path / "annotated.parquet").per_concept == {}  # default: 20 pairs at least
    card = render_model_card(ModelCard(calibration={"threshold": cal.threshold, "per_concept": cal.per_concept}),
                             check_model_dir(planted.path))  # fmt: skip
    assert "--threshold 0.05,person=0.1" in card and f"city {cal.per_concept['city']:g}" in card
