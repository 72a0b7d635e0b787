"""Fixtures for the finetune tests: tiny models (no downloads) and toy labelled files."""

from __future__ import annotations

from pathlib import Path

import pytest
from finetune_helpers import MINILM, tiny_bert, toy_records, write_jsonl

from nuner_core.models import resolve_model


@pytest.fixture(scope="session")
def tokenizer_dir() -> str:
    return resolve_model(MINILM)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir) -> str:
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"), tokenizer_dir, init_seed=0, dropout=0.1)


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory, tokenizer_dir) -> str:
    """A second tiny encoder (other weights): the "NuNER" of a fake pretrain artifact."""
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert-b"), tokenizer_dir, init_seed=1, dropout=0.1)


@pytest.fixture()
def toy_files(tmp_path) -> dict[str, Path]:
    return {
        "train": write_jsonl(tmp_path / "data" / "train.jsonl", toy_records(40, seed=0)),
        "dev": write_jsonl(tmp_path / "data" / "dev.jsonl", toy_records(12, seed=1)),
        "test": write_jsonl(tmp_path / "data" / "test.jsonl", toy_records(12, seed=2)),
    }
