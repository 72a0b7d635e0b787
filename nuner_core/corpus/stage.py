"""Corpus stage: read sources, split, filter, de-duplicate, sample, write sentences.parquet."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nuner_core.corpus.config import CorpusConfig
from nuner_core.corpus.sentences import CorpusCounts, Sampler, select_sentences, sentence_id
from nuner_core.corpus.sources import CorpusInputError, fingerprint_sources, iter_documents, local_files
from nuner_core.stage_api import Inputs, Progress, Report, StageContext, StageResult

CODE_VERSION = "1"
SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("doc_id", pa.string()), ("source", pa.string())])


def fingerprint(config: CorpusConfig) -> object:
    return fingerprint_sources(config.sources)


def describe(config: CorpusConfig, inputs: Inputs) -> str:
    size = f"{config.num_sentences:,} sentences" if config.num_sentences else "all sentences"
    return f"corpus · {size} · {len(config.sources)} source(s)"


def build_sentences(config: CorpusConfig, out_path: Path, progress: Progress | None = None) -> tuple[CorpusCounts, int]:
    """The stage's core: write the sample to ``out_path``; return the counts and rows written."""
    counts = CorpusCounts()
    sampler = Sampler(config.num_sentences, config.seed)
    for source in config.sources:
        documents = iter_documents(source, config.batch_size)
        for text, doc_id, origin in select_sentences(documents, config, counts, source.presplit):
            sampler.offer(text, doc_id, origin)
            if progress is not None and counts.sentences_seen % 10_000 == 0:
                progress.update(counts.documents, None, f"documents read, {counts.sentences_seen:,} sentences seen")
    counts.dropped.update(sampler.dropped)
    sample = sampler.sample()
    if not sample:
        raise CorpusInputError(
            f"the corpus yielded no sentence from {', '.join(_names(config))} ({counts.documents:,} documents, {counts.sentences_seen:,} sentences seen, "
            f"dropped: {dict(counts.dropped) or 'none'}); check the sources and the filters"
        )
    table = pa.table(
        {
            "id": [sentence_id(c.text) for c in sample],
            "text": [c.text for c in sample],
            "doc_id": [c.doc_id for c in sample],
            "source": [c.source for c in sample],
        },
        schema=SCHEMA,
    )
    pq.write_table(table, out_path)
    return counts, len(sample)


def _names(config: CorpusConfig) -> list[str]:
    """The files (or hub data sets) a config reads, for messages."""
    names: list[str] = []
    for source in config.sources:
        if source.kind == "hub":
            names.append(f"{source.path} (hub)")
        else:
            try:
                names += [str(f) for f in local_files(source)]
            except CorpusInputError:
                names.append(source.path)
    return names


def run(ctx: StageContext[CorpusConfig]) -> StageResult:
    config = ctx.config
    counts, kept = build_sentences(config, ctx.out_dir / "sentences.parquet", ctx.progress)
    ctx.progress.update(counts.documents, counts.documents, f"{kept:,} sentences kept")
    dropped = dict(sorted(counts.dropped.items()))
    table = [{"what": "documents read", "count": counts.documents}, {"what": "sentences seen", "count": counts.sentences_seen}]
    table += [{"what": f"dropped: {reason}", "count": n} for reason, n in dropped.items()]
    table.append({"what": "sentences kept", "count": kept})
    return StageResult(
        rows={"sentences": kept},
        dropped=dropped,
        headline={"documents": counts.documents, "sentences_seen": counts.sentences_seen, "sentences_kept": kept},
        reports=[Report("table", "corpus-counts", "Corpus: what was read, dropped and kept", table)],
    )
