"""A tiny encoder and benchmark for the experiment tests (no download)."""

from __future__ import annotations

import pytest
from experiment_helpers import make_tiny_bert, tiny_benchmark, tiny_overrides


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return make_tiny_bert(tmp_path_factory.mktemp("exp-tiny-bert"))


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory, assets) -> dict[str, str]:
    return tiny_benchmark(tmp_path_factory.mktemp("exp-tiny-bench"), assets)


@pytest.fixture(scope="session")
def tiny(tiny_model, tiny_bench) -> dict:
    """The demo profile reduced to seconds per point."""
    return tiny_overrides(tiny_model, tiny_bench)
