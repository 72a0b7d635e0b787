"""Fixtures for the server tests: the tagging tests' tiny planted model (no download), served in process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tagging"))  # tagging_helpers: one builder of tiny models

from tagging_helpers import build_planted  # noqa: E402


@pytest.fixture(scope="session")
def planted_dir(tmp_path_factory) -> Path:
    return build_planted(tmp_path_factory.mktemp("planted"), threshold=0.5)


@pytest.fixture(scope="session")
def planted_model(planted_dir):
    from nuner_core.serving.models import load_model

    return load_model("planted", str(planted_dir), device="cpu")


@pytest.fixture()
def client(planted_model):
    from fastapi.testclient import TestClient

    from nuner_core.serving.app import create_app

    with TestClient(create_app([planted_model])) as test_client:
        yield test_client


CLASSIFIER_LABELS = ["O", "B-city", "I-city", "B-person", "I-person"]


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory) -> Path:
    """A fine-tuned token classifier's model/ directory: a tiny random BERT with an IOB2 head (no download)."""
    import torch
    from tagging_helpers import tokenizer_dir
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    root = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(3)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128, id2label=dict(enumerate(CLASSIFIER_LABELS)),
                        label2id={label: i for i, label in enumerate(CLASSIFIER_LABELS)})  # fmt: skip
    BertForTokenClassification(config).save_pretrained(root)
    AutoTokenizer.from_pretrained(tokenizer_dir()).save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def classifier_model(classifier_dir):
    from nuner_core.serving.models import load_model

    return load_model("clf", str(classifier_dir), device="cpu")
