"""Shared helpers of the annotation tests (a module of its own: test modules import it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nuner_core.annotation.config import AnnotateConfig

KEY_ENV = "NUNER_TEST_LLM_KEY"

KEY = "sk-test-7f3a9c2e51b84d06-DO-NOT-LEAK"

MODEL = "test-model"


class FakeClock:
    """Virtual time: ``sleep`` returns at once, advances the clock and records the delay."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def sentence(i: int) -> str:
    return f"Sentence {i} says that Ada Lovelace wrote notes on the Analytical Engine in London."


def write_sentences(path: Path, texts: list[str], ids: list[str] | None = None) -> Path:
    ids = ids or [f"s{i:05d}" for i in range(len(texts))]
    pq.write_table(pa.table({"id": ids, "text": texts, "doc_id": ["d"] * len(texts), "source": ["test"] * len(texts)}), path)
    return path


def make_config(base_url: str | None, **overrides: Any) -> AnnotateConfig:
    """Fast settings for tests: high limits, short backoffs (the fake clock makes them free)."""
    values: dict[str, Any] = dict(
        model=MODEL,
        base_url=base_url,
        api_key_env=KEY_ENV,
        requests_per_minute=60_000,
        tokens_per_minute=None,
        max_in_flight=4,
        request_timeout_s=2.0,
        backoff_initial_s=0.5,
        backoff_max_s=8.0,
        retry_after_cap_s=30.0,
        max_failed_share=0.0,
        prices={MODEL: {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
    )
    values.update(overrides)
    return AnnotateConfig(**values)




# A run of the stage in a process of its own (kill -9, two runs at once): config as JSON, paths as arguments.
RUN_SCRIPT = """
import sys
from pathlib import Path
from nuner_core.annotation.annotate import run_annotation
from nuner_core.annotation.config import AnnotateConfig
config = AnnotateConfig.model_validate_json(sys.argv[1])
run_annotation(config, Path(sys.argv[2]), Path(sys.argv[3]), cache_dir=Path(sys.argv[4]))
"""


def spawn_run(config: AnnotateConfig, sentences: Path, out_dir: Path, cache_dir: Path, **popen: Any):
    """Start ``run_annotation`` in a subprocess with the test key in its environment."""
    import os
    import subprocess
    import sys

    out_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, config.model_dump_json(), str(sentences), str(out_dir), str(cache_dir)],
        env={**os.environ, KEY_ENV: KEY},
        **popen,
    )


def wait_for(condition, timeout_s: float = 60.0, what: str = "the condition") -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
