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
