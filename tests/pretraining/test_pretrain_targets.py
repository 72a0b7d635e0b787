"""Target construction from fast-tokenizer offsets (table-driven)."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from nuner_core.dual_encoder.annotated import Example
from nuner_core.pretraining.data import build_vocab, encode
from nuner_core.pretraining.targets import collate, padding_groups, token_targets

# offsets of "[CLS] new york city is big [SEP]" as a BERT tokenizer gives them, (0, 0) for specials
OFFSETS = np.array([[0, 0], [0, 3], [4, 8], [9, 13], [14, 16], [17, 20], [0, 0]])
SPECIAL = np.array([1, 0, 0, 0, 0, 0, 1], dtype=bool)
WORDPIECES = np.array([[0, 0], [0, 4], [4, 6], [6, 9], [10, 12], [0, 0]])  # "[CLS] thun ##der ##bolt is [SEP]"
WP_SPECIAL = np.array([1, 0, 0, 0, 0, 1], dtype=bool)

CASES = [
    # (name, offsets, special, spans (start, end, concept), C, expected positive (token, concept) pairs)
    ("one span, every sub-token", OFFSETS, SPECIAL, [(0, 8, 0)], 1, {(1, 0), (2, 0)}),
    ("nested spans give several positives", OFFSETS, SPECIAL, [(0, 13, 0), (0, 8, 1)], 2, {(1, 0), (2, 0), (3, 0), (1, 1), (2, 1)}),
    ("word pieces of one entity", WORDPIECES, WP_SPECIAL, [(0, 9, 0)], 1, {(1, 0), (2, 0), (3, 0)}),
    ("a token only partly inside is negative", WORDPIECES, WP_SPECIAL, [(0, 5, 0)], 1, {(1, 0)}),
    ("special tokens are never positive", OFFSETS, SPECIAL, [(0, 20, 0)], 1, {(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)}),
    ("a concept without span in this sentence: all negative", OFFSETS, SPECIAL, [(9, 13, 1)], 2, {(3, 1)}),
    ("no spans: all negative", OFFSETS, SPECIAL, [], 3, set()),
    ("span beyond the kept tokens (truncated)", OFFSETS[:4], SPECIAL[:4], [(14, 20, 0)], 1, set()),
]


@pytest.mark.parametrize("name,offsets,special,spans,C,expected", CASES, ids=[c[0] for c in CASES])
def test_token_targets(name, offsets, special, spans, C, expected):
    targets = token_targets(offsets, special, spans, C)
    assert targets.shape == (len(offsets), C)
    assert {(int(t), int(c)) for t, c in zip(*np.nonzero(targets))} == expected


def _positive_words(text, batch, encoded_offsets, concept):
    cols = batch.targets[0, :, concept].nonzero().flatten().tolist()
    return [text[encoded_offsets[t][0] : encoded_offsets[t][1]] for t in cols]


def test_real_tokenizer_offsets_truncation_and_masks(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = "Thunderbolts landed in New York City yesterday evening after a long flight."
    examples = [
        Example("a", text, ((0, 12, "film"), (23, 36, "city"), (23, 31, "state"))),
        Example("b", "Nothing here.", ()),
    ]
    vocab = build_vocab(tok, [examples], max_length=8)
    enc = encode(tok, examples, vocab, max_length=64)
    assert enc.truncated == 0 and enc.spans_cut == 0
    batch = collate(enc, np.array([0, 1]), vocab, tok.pad_token_id)
    column = {vocab.names[c]: j for j, c in enumerate(batch.concepts)}
    assert sorted(column) == ["city", "film", "state"]
    assert batch.targets.shape == (2, batch.text_ids.shape[1], 3)
    offsets = enc.offsets[0]
    assert "".join(w for w in _positive_words(text, batch, offsets, column["film"])).lower() == "thunderbolts"
    assert " ".join(_positive_words(text, batch, offsets, column["city"])).lower() == "new york city"
    assert " ".join(_positive_words(text, batch, offsets, column["state"])).lower() == "new york"
    # [CLS], [SEP] and padding are out of the loss; the span-less sentence is kept, all negative
    assert not batch.token_mask[0, 0] and not batch.token_mask[0, len(enc.input_ids[0]) - 1]
    assert not batch.token_mask[1, len(enc.input_ids[1]) :].any()
    assert batch.targets[1].sum() == 0 and batch.token_mask[1].sum() == len(enc.input_ids[1]) - 2
    assert batch.concept_valid.all() and batch.concept_ids.shape[0] == 3


def test_truncation_is_counted(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = "one two three four five six seven eight nine ten Paris"
    examples = [Example("a", text, ((0, 3, "number"), (text.index("Paris"), len(text), "city")))]
    vocab = build_vocab(tok, [examples], max_length=8)
    enc = encode(tok, examples, vocab, max_length=8)
    assert enc.truncated == 1 and enc.spans_cut == 1
    assert len(enc.input_ids[0]) == 8
    batch = collate(enc, np.array([0]), vocab, tok.pad_token_id)
    column = {vocab.names[c]: j for j, c in enumerate(batch.concepts)}
    assert batch.targets[0, :, column["number"]].sum() == 1
    assert batch.targets[0, :, column["city"]].sum() == 0  # cut off, still a negative column


def test_batch_without_concepts_has_a_masked_placeholder(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    examples = [Example("a", "No entities at all.", ()), Example("b", "Nor here.", ())]
    vocab = build_vocab(tok, [examples], max_length=8)
    enc = encode(tok, examples, vocab, max_length=16)
    batch = collate(enc, np.array([0, 1]), vocab, tok.pad_token_id)
    assert batch.concept_ids.shape[0] == 1 and not batch.concept_valid.any()


def test_concepts_are_length_sorted_and_grouped_with_little_padding(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    names = ["city", "river", "financial service provider", "x", "recurring remote meeting format of firms"]
    text = "a b c d e"
    examples = [Example("a", text, tuple((2 * i, 2 * i + 1, n) for i, n in enumerate(names)))]
    vocab = build_vocab(tok, [examples], max_length=16)
    batch = collate(encode(tok, examples, vocab, 16), np.array([0]), vocab, tok.pad_token_id)
    lengths = [len(vocab.input_ids[c]) for c in batch.concepts]
    assert lengths == sorted(lengths)
    covered = [i for start, end, _ in batch.concept_groups for i in range(start, end)]
    assert covered == list(range(len(names)))
    assert all(width == max(lengths[start:end]) for start, end, width in batch.concept_groups)


GROUP_CASES = [
    ([], ()),
    ([3, 3, 3], ((0, 3, 3),)),
    ([3] * 20 + [4] * 30 + [8], ((0, 20, 3), (20, 50, 4), (50, 51, 8))),
    ([3, 4, 5, 6], ((0, 4, 6),)),  # another call costs more than the padding it saves
]


@pytest.mark.parametrize("lengths,expected", GROUP_CASES)
def test_padding_groups(lengths, expected):
    assert padding_groups(lengths) == expected
