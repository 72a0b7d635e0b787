"""Shared fixtures: a local misbehaving OpenAI server, sentence files, a fake clock, configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from annotate_helpers import KEY, KEY_ENV, FakeClock, sentence, write_sentences
from fake_openai import FakeOpenAIServer

from nuner_core.annotation.annotate import run_annotation
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.annotation.result import AnnotationResult


@pytest.fixture
def sentences(tmp_path) -> Callable[[int], Path]:
    def make(n: int, name: str = "sentences.parquet") -> Path:
        return write_sentences(tmp_path / name, [sentence(i) for i in range(n)])

    return make


@pytest.fixture
def server():
    """Start a FakeOpenAIServer with the given options; every one is stopped after the test."""
    started: list[FakeOpenAIServer] = []

    def start(**kwargs: Any) -> FakeOpenAIServer:
        kwargs.setdefault("api_key", KEY)
        srv = FakeOpenAIServer(**kwargs).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def annotate(tmp_path):
    """Run the annotation with the test key in a private environment; returns (result, table)."""

    def run(config: AnnotateConfig, sentences_path: Path, *, out: str = "out", clock: FakeClock | None = None,
            environ: dict[str, str] | None = None, progress=None,
            lease_clock: FakeClock | None = None) -> tuple[AnnotationResult, pa.Table]:
        out_dir = tmp_path / out
        out_dir.mkdir(parents=True, exist_ok=True)
        result = run_annotation(
            config,
            sentences_path,
            out_dir,
            cache_dir=tmp_path / "cache",
            work_dir=tmp_path / "work",
            progress=progress,
            clock=clock or FakeClock(),
            lease_clock=lease_clock,
            environ={KEY_ENV: KEY} if environ is None else environ,
        )
        return result, pq.read_table(out_dir / "responses.parquet")

    return run
