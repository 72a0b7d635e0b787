"""Tiny two-encoder model directories for the tagging tests (built once per session, no download)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tagging_helpers import build_planted, build_random


@pytest.fixture(scope="session")
def planted_dir(tmp_path_factory) -> Path:
    return build_planted(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="session")
def random_dir(tmp_path_factory) -> Path:
    return build_random(tmp_path_factory.mktemp("random"))


@pytest.fixture(scope="session")
def planted(planted_dir):
    """A shared tagger on the planted model (tests that count passes build their own)."""
    from nuner_core.tagging import ZeroShotTagger

    return ZeroShotTagger.from_pretrained(planted_dir, device="cpu")


@pytest.fixture(scope="session")
def random_tagger(random_dir):
    from nuner_core.tagging import ZeroShotTagger

    return ZeroShotTagger.from_pretrained(random_dir, device="cpu")
