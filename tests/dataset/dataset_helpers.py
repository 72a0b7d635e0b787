"""Helpers for the dataset stage tests: write inputs in the real formats, run the stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from nuner_core.dataset.config import DatasetConfig
from nuner_core.dataset.stage import run
from nuner_core.paths import assets_dir
from nuner_core.stage_api import LogProgress, StageContext, StageResult
from nuner_core.store import ArtifactRef

RESPONSES_SCHEMA = {
    "id": pl.String,
    "text": pl.String,
    "response": pl.String,
    "model": pl.String,
    "prompt_version": pl.String,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "from_cache": pl.Boolean,
    "error": pl.String,
}


def write_responses(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A responses.parquet as the annotate stage writes it (DESIGN.md)."""
    full = [
        {
            "model": "recorded",
            "prompt_version": "1",
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "from_cache": True,
            "error": None if r.get("response") is not None else "HTTP 500",
            **r,
        }
        for r in rows
    ]
    pl.DataFrame(full, schema=RESPONSES_SCHEMA).write_parquet(path)
    return path


def run_dataset(tmp_path: Path, inputs: dict[str, ArtifactRef] | None = None, **config: Any) -> tuple[StageResult, Path]:
    """Run the stage's ``run`` into a fresh directory; returns the result and that directory."""
    out = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
    out.mkdir()
    ctx = StageContext(
        config=DatasetConfig(**config),
        inputs=inputs or {},
        out_dir=out,
        work_dir=tmp_path,
        cache_dir=tmp_path / "cache",
        progress=LogProgress("dataset"),
    )
    return run(ctx), out


def shared_annotations() -> Path:
    path = assets_dir() / "annotations.jsonl"
    if not path.is_file():
        pytest.skip(f"shared assets not found at {path}")
    return path
