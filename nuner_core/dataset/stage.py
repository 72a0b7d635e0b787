"""The dataset stage: LLM answers (or an imported annotated corpus) -> the training set.

Reads the annotate artifact's ``responses.parquet`` (``source: responses``), or a file
given by ``path`` (a responses.parquet, the NuNER CSV, Pile-NER JSON), and writes
``annotated.parquet`` and ``concepts.parquet`` (DESIGN.md) plus ``entities.parquet``
(every parsed line with its description and match status), ``rejected_lines.parquet``
and ``concept_frequency.png``. See ``nuner_core.dataset.build`` for the counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Mapping

import polars as pl
import pyarrow.parquet as pq

from nuner_core.dataset.build import build_dataset
from nuner_core.dataset.config import DatasetConfig
from nuner_core.dataset.sources import (
    RESPONSES_FILE,
    SourceLog,
    read_nuner_csv,
    read_pile_ner,
    read_responses,
)
from nuner_core.dataset.stats import plot_concept_frequency, top_concepts_table
from nuner_core.hashing import file_sha256
from nuner_core.paths import expand_path
from nuner_core.stage_api import Inputs, Report, StageContext, StageError, StageResult

CODE_VERSION = "1"
PLOT_FILE = "concept_frequency.png"

READERS: dict[str, Callable[[Path, int, SourceLog], Iterator[pl.DataFrame]]] = {
    "responses": read_responses,
    "nuner_csv": read_nuner_csv,
    "pile_ner": read_pile_ner,
}

def fingerprint(config: DatasetConfig) -> object:
    """A file given by ``path`` is part of the key by content; the annotate artifact by its key."""
    if not config.path:
        return None
    path = Path(expand_path(config.path))
    if not path.is_file():
        return {"path": str(path), "missing": True}
    return {"sha256": file_sha256(path)}


def upstream(config: DatasetConfig) -> tuple[str, ...]:
    """The upstream stages this config reads: ``("annotate",)`` for the annotate artifact's
    responses, none for a file given by ``path`` (an import, or a responses file).
    """
    return ("annotate",) if config.source == "responses" and not config.path else ()


def source_path(config: DatasetConfig, inputs: Inputs) -> Path:
    """The file this config reads; a clear error when the annotate artifact is needed but absent."""
    if config.path:
        return Path(expand_path(config.path))
    annotate = inputs.get("annotate")
    if annotate is None:
        raise StageError(
            "dataset.source=responses needs the annotate stage's artifact and there is none: run the "
            "annotate stage first, or set dataset.path to a responses.parquet file, or import an annotated "
            "corpus with dataset.source=nuner_csv|pile_ner and dataset.path"
        )
    return annotate.dir / RESPONSES_FILE


def describe(config: DatasetConfig, inputs: Inputs) -> str:
    """Task-run title, e.g. ``dataset · responses · top 100 concepts · 10,000 sentences``."""
    parts = ["dataset", config.source if not config.path else f"{config.source} {Path(config.path).name}"]
    if config.top_concepts:
        parts.append(f"top {config.top_concepts:,} concepts")
    if config.num_sentences:
        parts.append(f"{config.num_sentences:,} sentences")
    return " · ".join(parts)


def run(ctx: StageContext[DatasetConfig]) -> StageResult:
    cfg = ctx.config
    path = source_path(cfg, ctx.inputs)
    total = None
    if cfg.source == "responses" and path.is_file():
        try:
            total = pq.ParquetFile(path).metadata.num_rows
        except (OSError, ValueError):
            total = None  # read_responses names the problem
    log = SourceLog()
    batches = READERS[cfg.source](path, cfg.batch_size, log)
    result = build_dataset(batches, cfg, ctx.out_dir, log, ctx.progress, total)
    counts = result.counts
    plot_concept_frequency(result.concepts, ctx.out_dir / PLOT_FILE)
    table = top_concepts_table(result.concepts, cfg.top_table_rows)
    return StageResult(
        rows={
            "sentences": counts["sentences.kept"],
            "train": counts["sentences.train"],
            "validation": counts["sentences.validation"],
            "mentions": counts["mentions.kept"],
            "concepts": counts["concepts"],
        },
        dropped={k.replace(".dropped.", ": "): v for k, v in sorted(counts.items()) if ".dropped." in k and v},
        headline={
            "answers": counts["answers"],
            "entity_lines": counts["lines"],
            "lines_parsed": counts["lines.parsed"],
            "entities_found": counts["entities.exact"] + counts["entities.casefold"],
            "entities_not_found": counts["entities.absent"] + counts["entities.inside_word"],
            "sentences": counts["sentences.kept"],
            "concepts": counts["concepts"],
            "mentions": counts["mentions.kept"],
        },
        extra={
            "source": {"kind": cfg.source, "path": str(path)},
            "counts": dict(sorted(counts.items())),
            "examples": result.examples,
            "phase_s": result.phase_s,
        },
        reports=[
            Report("image", "dataset-concept-frequency", "Concept frequency by rank (log-log, paper Fig. 4)", PLOT_FILE),
            Report("table", "dataset-top-concepts", f"The {len(table)} most frequent concepts", table),
            Report("markdown", "dataset-accounting", "Where every answer, line and entity went", accounting_markdown(counts)),
        ],
    )


def accounting_markdown(counts: Mapping[str, int]) -> str:
    """A readable account of the counts: lines -> parsed -> found, answers -> kept."""

    def rows(prefix: str) -> list[str]:
        return [f"| {k[len(prefix):]} | {v:,} |" for k, v in sorted(counts.items()) if k.startswith(prefix)]

    out = [
        "### Lines",
        f"{counts.get('lines', 0):,} entity lines ({counts.get('lines.blank', 0):,} blank lines skipped): "
        f"{counts.get('lines.parsed', 0):,} parsed, dropped:",
        "",
        "| reason | lines |",
        "| --- | --- |",
        *rows("lines.dropped."),
        "",
        "### Entities (parsed lines) by match",
        "",
        "| match | entities |",
        "| --- | --- |",
        *[f"| {s} | {counts.get(f'entities.{s}', 0):,} |" for s in ("exact", "casefold", "inside_word", "absent")],
        "",
        "### Sentences",
        f"{counts.get('answers', 0):,} answers: {counts.get('sentences.kept', 0):,} kept "
        f"({counts.get('sentences.train', 0):,} train, {counts.get('sentences.validation', 0):,} validation), dropped:",
        "",
        "| reason | sentences |",
        "| --- | --- |",
        *rows("sentences.dropped."),
        "",
        "### Mentions",
        f"{counts.get('mentions.aligned', 0):,} aligned, {counts.get('mentions.kept', 0):,} kept, "
        f"{counts.get('concepts', 0):,} concepts ({counts.get('concepts.seen_once', 0):,} seen once)",
    ]
    return "\n".join(out)
