"""The tagger on tiny models: loading errors, pre-training's logits, decoding offsets, labels, the cache, batching."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from tagging_helpers import PLANTED_BIAS, PLANTED_TAU, build_planted, tokenizer_dir
from transformers import AutoTokenizer, GPT2Config, GPT2Model

from nuner_core.dual_encoder.model import DualEncoder
from nuner_core.stage_api import StageError
from nuner_core.tagging import DEFAULT_THRESHOLD, Entity, LabelError, ModelDirectoryError, ZeroShotTagger, model_identity, scoring
from nuner_core.text.words import segment_words

PLANTED_P = 1.0 / (1.0 + math.exp(-(PLANTED_TAU + PLANTED_BIAS)))  # sigmoid(tau * 1 + b)


# ---------------------------------------------------------------- loading


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _settings(root, **changes):
    path = root / "dual_encoder.json"
    settings = json.loads(path.read_text()) | changes
    path.write_text(json.dumps({k: v for k, v in settings.items() if v is not None}))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing", "no such directory"),
        ("file", "not a directory"),
        ("single_model", "single Hugging Face model"),
        ("text_only", "missing concept_encoder/config.json, concept_encoder/tokenizer.json"),
        ("no_settings", "missing dual_encoder.json"),
        ("no_tokenizer", "missing text_encoder/tokenizer.json"),
        ("bad_json", "not readable JSON"),
        ("bad_similarity", "similarity must be 'cosine' or 'dot'"),
        ("bad_temperature", "temperature must be a positive number"),
        ("missing_bias", "missing logit_bias"),
        ("bad_threshold", "threshold must be a probability"),
        ("bad_pooling", "pooling 'cls' is not supported"),
        ("decoder", "not an encoder"),
    ],
)
def test_not_a_dual_encoder_fails_clearly(tmp_path, random_dir, breakage, message):
    root = tmp_path / "model"
    if breakage == "file":
        root.write_text("hello")
    elif breakage == "single_model":
        _copy(random_dir / "text_encoder", root)
    elif breakage != "missing":
        _copy(random_dir, root)
    if breakage == "text_only":
        shutil.rmtree(root / "concept_encoder")
    elif breakage == "no_settings":
        (root / "dual_encoder.json").unlink()
    elif breakage == "no_tokenizer":
        (root / "text_encoder" / "tokenizer.json").unlink()
    elif breakage == "bad_json":
        (root / "dual_encoder.json").write_text("{similarity: cosine")
    elif breakage == "bad_similarity":
        _settings(root, similarity="l2")
    elif breakage == "bad_temperature":
        _settings(root, temperature=-1)
    elif breakage == "missing_bias":
        _settings(root, logit_bias=None)
    elif breakage == "bad_threshold":
        _settings(root, threshold=2)
    elif breakage == "bad_pooling":
        _settings(root, pooling="cls")
    elif breakage == "decoder":
        shutil.rmtree(root / "text_encoder")
        GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=30522)).save_pretrained(root / "text_encoder")
        AutoTokenizer.from_pretrained(tokenizer_dir()).save_pretrained(root / "text_encoder")
    with pytest.raises(ModelDirectoryError, match=message) as info:
        ZeroShotTagger.from_pretrained(root)
    assert isinstance(info.value, StageError)
    assert str(root.name) in str(info.value)


def test_the_window_comes_from_the_model(random_tagger, random_dir):
    assert random_tagger.max_length == 64  # max_position_embeddings 64 < the tokenizer's 512
    assert random_tagger.window == 62  # [CLS] and [SEP] aside
    assert ZeroShotTagger.from_pretrained(random_dir, max_length=20).window == 18
    with pytest.raises(ValueError, match="max_length"):
        ZeroShotTagger.from_pretrained(random_dir, max_length=65)


# ---------------------------------------------------------------- scoring = pre-training's


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_probabilities_are_the_pretraining_logits_at_first_subtokens(tmp_path, random_dir, similarity):
    root = _copy(random_dir, tmp_path / "model")
    _settings(root, similarity=similarity, temperature=2.0, logit_bias=-1.5)
    tagger = ZeroShotTagger.from_pretrained(root)
    text = "The unbelievably tall giraffe, Zürich's mascot, ate 12 leaves."
    labels = ["animal", "city name", "x", "a rather long label name with many words in it"]

    # Reference: DualEncoder.forward on the whole sentence and all labels (as a training batch would)
    tok = AutoTokenizer.from_pretrained(root / "text_encoder")
    enc = tok(text, return_tensors="pt")
    concepts = tok(labels, padding=True, truncation=True, max_length=16, return_tensors="pt")
    model = DualEncoder(tagger.model.text_encoder, tagger.model.concept_encoder, similarity, 2.0, bias_init=-1.5).eval()
    with torch.no_grad():
        logits = model(enc["input_ids"], enc["attention_mask"], concepts["input_ids"], concepts["attention_mask"])[0]  # (T, C)
    word_ids = enc.word_ids()
    first = [word_ids.index(w) for w in sorted({w for w in word_ids if w is not None})]
    expected = torch.sigmoid(logits[first]).numpy()  # (n_words, C)

    words = [text[s:e] for s, e in segment_words(text)]
    assert len(words) == len(first)  # BERT's pre-tokenisation and ours agree on this sentence
    got = tagger.score_spans([text], [segment_words(text)], labels)[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert got.std() > 0.01  # a random model: the comparison is not between constants


# ---------------------------------------------------------------- decoding on the planted model


def test_planted_entities_with_offsets(planted):
    texts = [
        "Alice  ate pizza in New   York, then Zürich.",
        "😀 Paris",
        "Cafe\u0301 with a zebra",  # decomposed accent: 5 code points for "Café"
        "",
        "   \n ",
        "nothing to see here",
    ]
    got = planted.predict(texts, ["city", "food", "person", "x"], threshold=0.5)
    p = pytest.approx(PLANTED_P, abs=1e-5)
    assert got == [
        [Entity(0, 5, "Alice", "person", p), Entity(11, 16, "pizza", "food", p),
         Entity(20, 30, "New   York", "city", p), Entity(37, 43, "Zürich", "city", p)],
        [Entity(2, 7, "Paris", "city", p)],
        [Entity(0, 5, "Cafe\u0301", "food", p), Entity(13, 18, "zebra", "x", p)],
        [], [], [],
    ]  # fmt: skip
    for text, entities in zip(texts, got):
        assert all(text[e.start : e.end] == e.text for e in entities)


def test_threshold_none_uses_the_stored_one_else_the_default(tmp_path, planted):
    assert planted.threshold == DEFAULT_THRESHOLD and planted.threshold_source == "default"
    strict = ZeroShotTagger.from_pretrained(build_planted(tmp_path / "strict", threshold=0.95))
    assert strict.threshold == 0.95 and strict.threshold_source == "calibrated"
    assert strict.predict(["Alice in Paris"], ["person", "city"]) == [[]]  # p = 0.924 < 0.95
    assert len(strict.predict(["Alice in Paris"], ["person", "city"], threshold=0.5)[0]) == 2


def test_threshold_is_inclusive(planted):
    p = float(planted.predict_words([["alice"]], ["person"])[0][0, 0])
    assert planted.predict(["alice"], ["person"], threshold=p)[0][0].label == "person"
    assert planted.predict(["alice"], ["person"], threshold=float(np.nextafter(np.float32(p), np.float32(1)))) == [[]]
    with pytest.raises(ValueError, match="threshold"):
        planted.predict(["alice"], ["person"], threshold=1.2)


def test_single_character_and_duplicate_labels(planted):
    once = planted.predict(["a zebra in London"], ["x", "city"], threshold=0.5)
    twice = planted.predict(["a zebra in London"], [" x ", "city", "x", "city "], threshold=0.5)
    assert once == twice
    assert [(e.text, e.label) for e in once[0]] == [("zebra", "x"), ("London", "city")]
    probs = planted.predict_words([["zebra", "london"]], ["x", "city", "x"])[0]
    assert probs.shape == (2, 3)
    np.testing.assert_array_equal(probs[:, 0], probs[:, 2])
    assert probs[0, 0] == pytest.approx(PLANTED_P, abs=1e-5) and probs[1, 1] == pytest.approx(PLANTED_P, abs=1e-5)


@pytest.mark.parametrize("labels", [[], [""], ["  "], ["city", None], "city"])
def test_bad_label_lists(planted, labels):
    with pytest.raises(LabelError):
        planted.predict(["Paris"], labels)


def test_a_word_without_a_token_is_counted_and_never_labelled(planted_dir):
    tagger = ZeroShotTagger.from_pretrained(planted_dir)
    got = tagger.predict(["Paris \u0001 London"], ["city"], threshold=0.5)[0]  # BERT's normaliser drops \u0001
    assert [e.text for e in got] == ["Paris", "London"]  # the unscored word between them breaks the run
    assert tagger.stats.words == 3 and tagger.stats.words_without_token == 1


def test_predict_words_matches_predict(planted):
    words = ["alice", "went", "to", "new", "york"]
    probs = planted.predict_words([words], ["person", "city"])[0]
    entities = planted.predict([" ".join(words)], ["person", "city"], threshold=0.5)[0]
    assert [(e.text, e.label) for e in entities] == [("alice", "person"), ("new york", "city")]
    assert (probs.max(axis=1) >= 0.5).tolist() == [True, False, False, True, True]


# ---------------------------------------------------------------- the label cache and many labels


def _count_calls(module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_a_fixed_label_set_costs_one_concept_pass(planted_dir):
    tagger = ZeroShotTagger.from_pretrained(planted_dir)
    concept_calls = _count_calls(tagger.model.concept_encoder)
    text_calls = _count_calls(tagger.model.text_encoder)
    texts = ["Alice in Paris", "Bob ate pizza", "a zebra"]
    for _ in range(3):
        tagger.predict(texts, ["person", "city", "food"], threshold=0.5)
    assert concept_calls[0] == 1 and tagger.stats.labels_encoded == 3
    assert text_calls[0] == 3  # the three short texts fit one batch: one text-encoder call per predict
    tagger.predict(texts, ["food", "x", "city"])  # one new label: only it is encoded
    assert concept_calls[0] == 2 and tagger.stats.labels_encoded == 4
    tagger.clear_label_cache()
    tagger.predict(texts, ["food"])
    assert concept_calls[0] == 3 and tagger.stats.labels_encoded == 5


def test_thousands_of_labels(random_dir, monkeypatch):
    tagger = ZeroShotTagger.from_pretrained(random_dir, label_batch_size=256)
    concept_calls = _count_calls(tagger.model.concept_encoder)
    labels = [f"concept number {i}" for i in range(3000)]
    sentences = [["the", "cat", "sat", "on", "the", "mat"], ["a", "dog"]]
    many = tagger.predict_words(sentences, labels)
    assert concept_calls[0] == math.ceil(3000 / 256)
    assert [p.shape for p in many] == [(6, 3000), (2, 3000)]
    few = tagger.predict_words(sentences, labels[1234:1240])
    for a, b in zip(many, few):
        np.testing.assert_allclose(a[:, 1234:1240], b, atol=1e-5)
    # scoring in row blocks (bounded words x labels) changes nothing; the best label is the argmax
    monkeypatch.setattr(scoring, "MAX_LOGITS", 3000 * 2)
    blocked = tagger.predict_words(sentences, labels)
    for a, b in zip(many, blocked):
        np.testing.assert_allclose(a, b, atol=1e-6)
    best = tagger.best_labels(["the cat sat on the mat"], [segment_words("the cat sat on the mat")], labels)[0]
    np.testing.assert_array_equal(best[0], many[0].argmax(axis=1))
    np.testing.assert_allclose(best[1], many[0].max(axis=1), atol=1e-6)
    assert concept_calls[0] == math.ceil(3000 / 256)  # all from the cache since


def test_batching_does_not_change_scores(random_dir):
    texts = ["the cat sat on the mat", "a", "", "dogs and cats and birds " * 20, "Zürich, 2024: a big year!"]
    small = ZeroShotTagger.from_pretrained(random_dir, batch_tokens=64)
    large = ZeroShotTagger.from_pretrained(random_dir, batch_tokens=100_000)
    spans = [segment_words(t) for t in texts]
    a = small.score_spans(texts, spans, ["animal", "place"])
    b = large.score_spans(texts, spans, ["animal", "place"])
    assert small.stats.encoder_batches > large.stats.encoder_batches
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_identity_follows_the_files(tmp_path, planted_dir):
    copy = _copy(planted_dir, tmp_path / "copy")
    assert model_identity(copy) == model_identity(planted_dir)
    _settings(copy, threshold=0.3)
    assert model_identity(copy) != model_identity(planted_dir)


def test_long_label_names_are_cut_like_concept_names_and_counted(random_dir):
    tagger = ZeroShotTagger.from_pretrained(random_dir)
    words = "the cat sat on a mat and the dog ran to the park with his old red ball".split()  # 18 one-token words
    long, cut = " ".join(words), " ".join(words[:14])  # 16 tokens with [CLS] and [SEP]: the first 14 words
    vectors = tagger.label_vectors([long, cut, "cat"])
    torch.testing.assert_close(vectors[0], vectors[1])
    assert not torch.allclose(vectors[0], vectors[2])
    assert tagger.stats.labels_truncated == 1 and tagger.stats.labels_encoded == 3


def test_write_threshold(tmp_path, planted_dir):
    from nuner_core.tagging import write_threshold

    root = _copy(planted_dir, tmp_path / "m")
    _settings(root, future_key="kept")
    assert write_threshold(root, 0.07).threshold == 0.07
    assert ZeroShotTagger.from_pretrained(root).threshold == 0.07
    assert json.loads((root / "dual_encoder.json").read_text())["future_key"] == "kept"
    assert write_threshold(root, None).threshold is None
    assert "threshold" not in json.loads((root / "dual_encoder.json").read_text())
    with pytest.raises(ValueError, match="threshold"):
        write_threshold(root, 1.5)
    with pytest.raises(ModelDirectoryError):
        write_threshold(tmp_path / "nope", 0.1)
