"""Reading annotated.parquet (bad input), batch layout and the control data."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pretrain_helpers import toy_rows, write_annotated

from nuner_core.dual_encoder.annotated import load_annotated
from nuner_core.pretraining.controls import destroy
from nuner_core.pretraining.data import epoch_micro_batches, eval_micro_batches, make_layout
from nuner_core.stage_api import StageError


def test_bad_spans_and_records_are_counted_and_span_less_sentences_kept(tmp_path):
    rows = [
        {"id": "a", "text": "Paris is nice.", "split": "train", "spans": [{"start": 0, "end": 5, "concept": "city"}]},
        {"id": "b", "text": "Plain text.", "split": "train", "spans": []},
        {"id": "c", "text": "Short.", "split": "train", "spans": [{"start": 2, "end": 99, "concept": "x"}, {"start": 3, "end": 3, "concept": "x"}]},
        {"id": "d", "text": "Rome too.", "split": "train", "spans": [{"start": 0, "end": 4, "concept": " "}]},
        {"id": "e", "text": "", "split": "train", "spans": []},
        {"id": "f", "text": "Test split.", "split": "test", "spans": []},
        {"id": "g", "text": "Held out.", "split": "validation", "spans": None},
    ]
    data = load_annotated(write_annotated(tmp_path / "a.parquet", rows))
    assert [ex.id for ex in data.train] == ["a", "b", "c", "d"]
    assert [ex.id for ex in data.validation] == ["g"]
    assert data.train[1].spans == () and data.train[2].spans == ()
    assert data.dropped == Counter({"span_out_of_range": 2, "span_without_concept": 1, "empty_text": 1, "unknown_split:test": 1})


def test_empty_training_set_is_a_clear_error(tmp_path):
    rows = [{"id": "g", "text": "Held out.", "split": "validation", "spans": []}]
    with pytest.raises(StageError, match="no usable training sentences"):
        load_annotated(write_annotated(tmp_path / "a.parquet", rows))
    with pytest.raises(StageError, match="no usable training sentences"):
        load_annotated(write_annotated(tmp_path / "b.parquet", []))


def test_missing_column_and_missing_file(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), path)
    with pytest.raises(StageError, match=r"missing column\(s\) \['split', 'spans'\]"):
        load_annotated(path)
    with pytest.raises(StageError, match="no such file"):
        load_annotated(tmp_path / "nope.parquet")


def test_too_few_sentences_for_one_batch_and_bad_micro_batch():
    with pytest.raises(StageError, match="fewer than one batch of 48"):
        make_layout(30, 48, None, 1)
    with pytest.raises(StageError, match="not a multiple"):
        make_layout(100, 48, 5, 1)


def test_layout_and_bucketed_batches():
    layout = make_layout(103, batch_size=8, micro_batch_size=2, world=2)
    assert (layout.group, layout.accum, layout.steps_per_epoch, layout.skipped_per_epoch) == (4, 2, 12, 7)
    lengths = np.random.default_rng(0).integers(5, 60, size=103)
    batches = epoch_micro_batches(lengths, layout, bucket_batches=5, seed=1, epoch=0)
    assert len(batches) == 48 and all(len(b) == 2 for b in batches)
    flat = np.concatenate(batches)
    assert len(set(flat.tolist())) == len(flat)  # each sentence at most once per epoch
    again = epoch_micro_batches(lengths, layout, bucket_batches=5, seed=1, epoch=0)
    assert all((a == b).all() for a, b in zip(batches, again))  # deterministic: the step is the data position
    other = epoch_micro_batches(lengths, layout, bucket_batches=5, seed=1, epoch=1)
    assert any((a != b).any() for a, b in zip(batches, other))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < np.mean(np.ptp(lengths[np.random.default_rng(2).permutation(96).reshape(48, 2)], axis=1))
    shares = [eval_micro_batches(lengths, 4, r, 2) for r in range(2)]
    assert sorted(np.concatenate(shares[0] + shares[1]).tolist()) == list(range(103))


def test_controls_destroy_the_annotations_but_keep_their_shape(tmp_path):
    data = load_annotated(write_annotated(tmp_path / "a.parquet", toy_rows()))
    shuffled = destroy(data, "shuffle_concepts", seed=0)
    moved = destroy(data, "random_spans", seed=0)
    for split in ("train", "validation"):
        real, shuf, mov = getattr(data, split), getattr(shuffled, split), getattr(moved, split)
        assert [ex.text for ex in shuf] == [ex.text for ex in real]
        assert [[(s, e) for s, e, _ in ex.spans] for ex in shuf] == [[(s, e) for s, e, _ in ex.spans] for ex in real]
        assert Counter(c for ex in shuf for *_, c in ex.spans) == Counter(c for ex in real for *_, c in ex.spans)
        assert [[c for *_, c in ex.spans] for ex in mov] == [[c for *_, c in ex.spans] for ex in real]
        assert all(0 <= s < e <= len(ex.text) for ex in mov for s, e, _ in ex.spans)
    pairs = lambda d: [(ex.text[s:e], c) for ex in d.train for s, e, c in ex.spans]  # noqa: E731
    assert pairs(shuffled) != pairs(data) and pairs(moved) != pairs(data)
    assert pairs(destroy(data, "shuffle_concepts", seed=0)) == pairs(shuffled)  # seeded
