"""The dataset stage's core: parse, align, filter, split, write.

Memory follows the batch size: the scan spills each batch's sentences and spans (``spill``),
the filters run on what is kept per sentence (id, drop reason, span counts), and the rows are
read back batch by batch into ``annotated.parquet`` (a row group per batch).

Input: batches of ``id``, ``text``, ``lines`` (see ``sources``). Output files in ``out_dir``:

    annotated.parquet       id, text, split, spans: list<struct<start: int32, end: int32, concept: string>>
    concepts.parquet        concept, mentions, sentences (of the kept sentences, most frequent first)
    entities.parquet        every parsed line: id, line, entity, concept, description, match, occurrences
    rejected_lines.parquet  every dropped line: id, line, raw, reason

Every answer, line, entity and mention is accounted for in ``counts`` (flat dotted keys);
``check_accounting`` verifies the sums before anything is published. Sentences are dropped
for exactly one reason each, tried in this order:

    no_id               the record has no id (null)
    no_text             the sentence text is missing or blank
    failed_response     the LLM call failed (null response)
    duplicate_id        an earlier record has the same id
    concept_filter      an annotation's concept is in ``drop_concepts`` (paper §3.2)
    no_entities         the answer has no parsed entity line
    none_found          no entity was found in the sentence
    rare_concepts_only  every span has a concept outside the ``top_concepts`` kept
    subsampled_out      not among the ``num_sentences`` sampled
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from polars import CompatLevel

from nuner_core.dataset.align import STATUSES, Alignment, align
from nuner_core.dataset.config import DatasetConfig
from nuner_core.dataset.parse import (
    DROP_REASONS,
    ParsedLines,
    explode_lines,
    normalise_concept_str,
    parse_lines,
)
from nuner_core.dataset.sources import SourceLog
from nuner_core.dataset.spill import Spill
from nuner_core.dataset.split import subsample_mask, validation_mask
from nuner_core.stage_api import Progress, StageError

SENTENCE_REASONS = (
    "no_id",
    "no_text",
    "failed_response",
    "duplicate_id",
    "concept_filter",
    "no_entities",
    "none_found",
    "rare_concepts_only",
    "subsampled_out",
)
_CODE = {name: i + 1 for i, name in enumerate(SENTENCE_REASONS)}  # 0: kept

SPAN_TYPE = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("concept", pa.string())])
ANNOTATED_SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("split", pa.string()), ("spans", pa.list_(SPAN_TYPE))]
)
CONCEPTS_SCHEMA = pa.schema([("concept", pa.string()), ("mentions", pa.int64()), ("sentences", pa.int64())])
ENTITIES_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("line", pa.int32()),
        ("entity", pa.string()),
        ("concept", pa.string()),
        ("description", pa.string()),
        ("match", pa.string()),
        ("occurrences", pa.int32()),
    ]
)
REJECTED_SCHEMA = pa.schema([("id", pa.string()), ("line", pa.int32()), ("raw", pa.string()), ("reason", pa.string())])


@dataclass
class BuildResult:
    counts: dict[str, int]  # flat dotted keys, see check_accounting
    concepts: pl.DataFrame  # concept, mentions, sentences; most frequent first
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few records per drop reason
    phase_s: dict[str, float] = field(default_factory=dict)  # seconds per phase (read, parse, align, ...)


class _Clock:
    """Adds the time since the last call to a named phase."""

    def __init__(self) -> None:
        self.phase_s: defaultdict[str, float] = defaultdict(float)
        self._last = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.phase_s[phase] += now - self._last
        self._last = now


def _arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    return frame.to_arrow(compat_level=CompatLevel.oldest()).cast(schema)


def build_dataset(
    batches: Iterable[pl.DataFrame],
    cfg: DatasetConfig,
    out_dir: Path,
    log: SourceLog,
    progress: Progress | None = None,
    total: int | None = None,
) -> BuildResult:
    """Build the training set from source batches into ``out_dir``: scan, filter, write."""
    # The scanned batches wait on disk beside the outputs (removed before the stage ends).
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".spill-") as spill_dir:
        return _build(batches, cfg, out_dir, log, Spill(Path(spill_dir)), progress, total)


def _build(
    batches: Iterable[pl.DataFrame],
    cfg: DatasetConfig,
    out_dir: Path,
    log: SourceLog,
    spill: Spill,
    progress: Progress | None,
    total: int | None,
) -> BuildResult:
    counts: Counter[str] = Counter({f"lines.dropped.{r}": 0 for r in DROP_REASONS})
    clock = _Clock()
    scanned = _scan(batches, cfg, out_dir, spill, counts, clock, progress, total)
    clock("read")
    malformed = log.counts.get("sentences.dropped.malformed_record", 0)
    counts.update(log.counts)
    counts["answers"] = scanned.sentences + malformed
    if scanned.sentences == 0:
        detail = f"; {malformed:,} malformed record(s), e.g. {log.examples.get('sentences.dropped.malformed_record', [])[:3]}" if malformed else ""
        raise StageError(f"the source holds no readable sentences{detail}")
    kept = _filter(scanned, cfg, counts)
    clock("filter")
    concepts = _write(scanned, kept, cfg, out_dir, counts, clock)
    result = BuildResult(
        counts=dict(counts),
        concepts=concepts,
        examples=log.examples,
        phase_s={k: round(v, 3) for k, v in clock.phase_s.items()},
    )
    problems = check_accounting(result.counts)
    if problems:
        raise StageError("dataset accounting does not add up (a bug): " + "; ".join(problems))
    return result


@dataclass
class _Scanned:
    """Every sentence read, with what the filters need of it; texts and spans wait in ``spill``."""

    spill: Spill  # per batch: sentences (id, text), spans (sid u32, start i32, end i32, concept str, casefold bool, order u32)
    ids: pa.ChunkedArray  # (S,)
    reason: np.ndarray  # (S,) int8: 0 kept so far, else a _CODE
    n_parsed: np.ndarray  # (S,) parsed entity lines per sentence
    drop_hit: np.ndarray  # (S,) bool: an annotation of a dropped concept
    n_aligned: np.ndarray  # (S,) aligned spans per sentence
    mentions: int  # aligned spans
    casefold: int  # of them, found by the case-insensitive fallback
    concepts_parsed: int  # distinct concepts among the parsed lines

    @property
    def sentences(self) -> int:
        return len(self.reason)


@dataclass
class _Kept:
    """The outcome of the filters: which sentences and which concepts' spans are kept."""

    final: np.ndarray  # (S,) bool
    concepts: pl.Series | None  # the top concepts kept; None: all


def _scan(
    batches: Iterable[pl.DataFrame],
    cfg: DatasetConfig,
    out_dir: Path,
    spill: Spill,
    counts: Counter[str],
    clock: _Clock,
    progress: Progress | None,
    total: int | None,
) -> _Scanned:
    """Parse and align every batch; write the side files (entities, rejected lines) and spill the
    sentences and spans as it goes."""
    drop_set = sorted({normalise_concept_str(c) for c in cfg.drop_concepts} - {""})
    ids_parts: list[pa.Array] = []
    n_aligned_parts: list[np.ndarray] = []  # (S,) aligned spans per sentence
    mentions = casefold = 0
    reason_parts: list[np.ndarray] = []  # (S,) int8 per batch
    n_parsed_parts: list[np.ndarray] = []  # (S,) parsed lines per sentence
    drop_hit_parts: list[np.ndarray] = []  # (S,) bool: an annotation of a dropped concept
    offset = 0
    concept_parts: list[pl.Series] = []  # distinct parsed concepts per batch
    # Side files for analysis: dictionary-encode the repetitive columns only, no statistics (faster).
    side = {"write_statistics": False}
    entities_writer = pq.ParquetWriter(
        out_dir / "entities.parquet", ENTITIES_SCHEMA, use_dictionary=["concept", "match"], **side
    )
    rejected_writer = pq.ParquetWriter(out_dir / "rejected_lines.parquet", REJECTED_SCHEMA, use_dictionary=["reason"], **side)
    try:
        for frame in batches:
            clock("read")
            n = frame.height
            text = frame["text"]
            reason = _unusable_sentences(frame, counts)
            valid = np.flatnonzero(reason == 0)
            exploded = explode_lines(frame["lines"].gather(valid), sid=valid)
            result = parse_lines(exploded)
            counts.update(result.counts)
            parsed = result.parsed
            concept_parts.append(parsed["concept"].unique())
            clock("parse")
            psid = parsed["sid"].to_numpy().astype(np.int64)  # (P,)
            texts = text.fill_null("")
            al = align(psid, parsed["entity"], texts, cfg.case_insensitive_fallback)
            for code, name in enumerate(STATUSES):
                counts[f"entities.{name}"] += int((al.status == code).sum())
            if al.capped.any():  # a key only when it happens: the stats of ordinary data stay as they were
                counts["entities.occurrences_capped"] += int(al.capped.sum())
            clock("align")

            n_parsed_parts.append(np.bincount(psid, minlength=n))
            hit = np.zeros(n, dtype=bool)
            if drop_set and parsed.height:
                hit[psid[parsed["concept"].is_in(drop_set).to_numpy()]] = True
            drop_hit_parts.append(hit)
            rows = al.spans["row"].to_numpy().astype(np.int64)
            spans = al.spans.select(
                    sid=pl.Series((psid[rows] + offset).astype(np.uint32)),
                    start=pl.col("start"),
                    end=pl.col("end"),
                    concept=parsed["concept"].gather(rows),
                    casefold=pl.Series(al.status[rows] == STATUSES.index("casefold")),
                    order=pl.Series(rows.astype(np.uint32)),  # parsed line order within the batch
            )
            n_aligned_parts.append(np.bincount(psid[rows], minlength=n))
            mentions += spans.height
            casefold += int(spans["casefold"].sum())
            ids = frame["id"].fill_null("")
            clock("collect")
            _write_side_files(entities_writer, rejected_writer, ids, result, al)
            clock("write_side_files")
            ids_parts.append(_string_column(ids))
            spill.add(pl.DataFrame({"id": ids, "text": texts}), spans)
            clock("spill")
            reason_parts.append(reason)
            offset += n
            if progress is not None:
                progress.update(offset, total, f"sentences parsed and aligned ({counts['lines']:,} lines)")
    finally:
        entities_writer.close()
        rejected_writer.close()
        spill.close()
    return _Scanned(
        spill=spill,
        ids=pa.chunked_array(ids_parts, type=pa.string()),
        reason=np.concatenate(reason_parts) if reason_parts else np.zeros(0, dtype=np.int8),
        n_parsed=np.concatenate(n_parsed_parts) if n_parsed_parts else np.zeros(0, dtype=np.int64),
        drop_hit=np.concatenate(drop_hit_parts) if drop_hit_parts else np.zeros(0, dtype=bool),
        n_aligned=np.concatenate(n_aligned_parts) if n_aligned_parts else np.zeros(0, dtype=np.int64),
        mentions=mentions,
        casefold=casefold,
        concepts_parsed=int(pl.concat(concept_parts).n_unique()) if concept_parts else 0,
    )


def _unusable_sentences(frame: pl.DataFrame, counts: Counter[str]) -> np.ndarray:
    """(S,) int8: why each sentence of the batch cannot be used (0: it can), counting the lines
    of those without id or text as dropped lines."""
    text = frame["text"]
    no_text = (text.is_null() | (text.str.strip_chars() == "")).fill_null(True).to_numpy()
    no_id = frame["id"].is_null().to_numpy()
    failed = frame["lines"].is_null().to_numpy() & ~no_text & ~no_id
    reason = np.zeros(frame.height, dtype=np.int8)
    reason[no_text] = _CODE["no_text"]
    reason[no_id] = _CODE["no_id"]
    reason[failed] = _CODE["failed_response"]
    for why, mask in (("no_id", no_id), ("no_text", no_text & ~no_id)):
        orphan = explode_lines(frame["lines"].filter(pl.Series(mask)))
        orphan_lines = int((orphan["raw"].fill_null("").str.strip_chars() != "").sum())
        counts["lines"] += orphan_lines
        counts[f"lines.dropped.{why}"] += orphan_lines
    return reason


def _write_side_files(
    entities_writer: pq.ParquetWriter, rejected_writer: pq.ParquetWriter, ids: pl.Series, result: ParsedLines, al: Alignment
) -> None:
    """One batch's rows of entities.parquet (every parsed line, how it matched) and rejected_lines.parquet."""
    parsed = result.parsed
    entities_writer.write_table(
        _arrow(
            parsed.select(
                id=ids.gather(parsed["sid"]),
                line=pl.col("line"),
                entity=pl.col("entity"),
                concept=pl.col("concept"),
                description=pl.col("description"),
                match=pl.Series(STATUSES, dtype=pl.String).gather(al.status.astype(np.uint32)),
                occurrences=pl.Series(al.occurrences),
            ),
            ENTITIES_SCHEMA,
        )
    )
    rejected_writer.write_table(
        _arrow(
            result.rejected.select(id=ids.gather(result.rejected["sid"]), line="line", raw="raw", reason="reason"),
            REJECTED_SCHEMA,
        )
    )


def _filter(scanned: _Scanned, cfg: DatasetConfig, counts: Counter[str]) -> _Kept:
    """The sentence-level filters, in the order of SENTENCE_REASONS; the mentions are counted as they are written."""
    ids_all = scanned.ids
    reason = scanned.reason.copy()
    first = pl.Series("id", ids_all).is_first_distinct().to_numpy()
    reason[(reason == 0) & ~first] = _CODE["duplicate_id"]
    reason[(reason == 0) & scanned.drop_hit] = _CODE["concept_filter"]

    kept_concepts = None
    n_common = scanned.n_aligned  # (S,) spans of the concepts kept per sentence
    if cfg.top_concepts is not None:
        kept_concepts = _top_concepts(scanned.spill, reason == 0, cfg.top_concepts, counts)
        if not cfg.keep_empty:
            n_common = _common_per_sentence(scanned.spill, kept_concepts, len(reason))
    if not cfg.keep_empty:
        open_ = reason == 0
        reason[open_ & (scanned.n_parsed == 0)] = _CODE["no_entities"]
        reason[(reason == 0) & (scanned.n_aligned == 0)] = _CODE["none_found"]
        reason[(reason == 0) & (n_common == 0)] = _CODE["rare_concepts_only"]
    if cfg.num_sentences is not None:
        candidates = np.flatnonzero(reason == 0)
        chosen = subsample_mask(ids_all.take(pa.array(candidates)), cfg.num_sentences, cfg.seed)
        reason[candidates[~chosen]] = _CODE["subsampled_out"]
        counts["sentences.available_for_subsample"] = int(candidates.size)
    for name, code in _CODE.items():
        counts[f"sentences.dropped.{name}"] = int((reason == code).sum())
    final = reason == 0  # (S,)
    counts["sentences.kept"] = int(final.sum())
    if not final.any():
        dropped = {k: v for k, v in counts.items() if k.startswith("sentences.dropped.") and v}
        raise StageError(f"no sentence is left to train on: of {counts['answers']:,} answers, dropped {dropped}")
    # ---- mentions: aligned = kept + dropped with their sentence + dropped as rare concepts
    counts["mentions.aligned"] = scanned.mentions
    counts["mentions.casefold"] = scanned.casefold
    for key in ("mentions.kept", "mentions.dropped.rare_concept", "mentions.dropped.sentence_dropped"):
        counts[key] = 0  # counted batch by batch in _write
    return _Kept(final=final, concepts=kept_concepts)


def _top_concepts(spill: Spill, alive: np.ndarray, top: int, counts: Counter[str]) -> pl.Series:
    """The ``top`` concepts with the most spans in the sentences still ``alive`` (ties: by name)."""
    parts = []
    for spans in spill.spans():
        parts.append(spans.filter(pl.Series(alive[spans["sid"].to_numpy()])).group_by("concept").len())
    per_concept = pl.concat(parts).group_by("concept").agg(pl.col("len").sum())
    counts["concepts.before_top_filter"] = per_concept.height
    return per_concept.sort(["len", "concept"], descending=[True, False]).head(top)["concept"]


def _rare(spans: pl.DataFrame, kept_concepts: pl.Series | None) -> np.ndarray:
    """(M,) bool: the spans of a concept outside the top concepts kept."""
    if kept_concepts is None:
        return np.zeros(spans.height, dtype=bool)
    return ~spans["concept"].is_in(kept_concepts.implode()).to_numpy()


def _common_per_sentence(spill: Spill, kept_concepts: pl.Series, sentences: int) -> np.ndarray:
    """(S,) the spans of the top concepts per sentence."""
    n_common = np.zeros(sentences, dtype=np.int64)
    for spans in spill.spans():
        n_common += np.bincount(spans["sid"].to_numpy()[~_rare(spans, kept_concepts)], minlength=sentences)
    return n_common


def _write(scanned: _Scanned, kept: _Kept, cfg: DatasetConfig, out_dir: Path, counts: Counter[str], clock: _Clock) -> pl.DataFrame:
    """Write ``annotated.parquet`` batch by batch, then ``concepts.parquet``; return the concept table."""
    final = kept.final
    per_batch: list[pl.DataFrame] = []  # concept, mentions, sentences of each batch's kept rows
    validation = 0
    with pq.ParquetWriter(out_dir / "annotated.parquet", ANNOTATED_SCHEMA) as writer:
        for offset, sentences, spans in scanned.spill.batches():
            sid = spans["sid"].to_numpy().astype(np.int64)  # (M,) global sentence index
            rare = _rare(spans, kept.concepts)
            span_final = final[sid]
            keep_span = span_final & ~rare
            counts["mentions.kept"] += int(keep_span.sum())
            counts["mentions.dropped.rare_concept"] += int((span_final & rare).sum())
            counts["mentions.dropped.sentence_dropped"] += int((~span_final).sum())
            batch_final = final[offset : offset + sentences.height]
            if not batch_final.any():
                continue
            table, kept_spans = _annotated_rows(sentences, spans, keep_span, sid - offset, batch_final, cfg)
            writer.write_table(table)
            validation += pc.sum(pc.equal(table["split"], "validation")).as_py() or 0
            per_batch.append(
                kept_spans.group_by("concept").agg(mentions=pl.len().cast(pl.Int64), sentences=pl.col("row").n_unique().cast(pl.Int64))
            )
    clock("write_annotated")
    kept_rows = int(final.sum())
    counts["sentences.validation"] = validation
    counts["sentences.train"] = kept_rows - validation

    # ---- concepts.parquet (a batch's rows are its own: the sentence counts add up across batches)
    concepts = (
        pl.concat(per_batch)
        .group_by("concept")
        .agg(pl.col("mentions").sum(), pl.col("sentences").sum())
        .sort(["mentions", "concept"], descending=[True, False])
    )
    pq.write_table(_arrow(concepts, CONCEPTS_SCHEMA), out_dir / "concepts.parquet")
    counts["concepts"] = concepts.height
    counts["concepts.seen_once"] = int((concepts["mentions"] == 1).sum())
    counts["concepts.parsed"] = scanned.concepts_parsed
    clock("concepts")
    return concepts


def _annotated_rows(
    sentences: pl.DataFrame, spans: pl.DataFrame, keep_span: np.ndarray, sid: np.ndarray, final: np.ndarray, cfg: DatasetConfig
) -> tuple[pa.Table, pl.DataFrame]:
    """One batch's rows of annotated.parquet (one per kept sentence, spans sorted by (start, end), then answer
    line order) and its kept spans with their ``row``; ``sid`` and ``final`` index the batch's sentences."""
    kept_rows = np.flatnonzero(final)
    new_index = np.cumsum(final) - 1  # sentence index in the batch -> row in the batch's output
    kept_spans = (
        spans.filter(pl.Series(keep_span))
        .with_columns(row=pl.Series(new_index[sid[keep_span]].astype(np.uint32)))
        .sort(["row", "start", "end", "order"])
    )
    per_row = np.bincount(kept_spans["row"].to_numpy(), minlength=kept_rows.size)
    offsets = np.zeros(kept_rows.size + 1, dtype=np.int32)
    np.cumsum(per_row, out=offsets[1:])
    span_struct = pa.StructArray.from_arrays(
        [
            pa.array(kept_spans["start"].to_numpy(), type=pa.int32()),
            pa.array(kept_spans["end"].to_numpy(), type=pa.int32()),
            kept_spans["concept"].to_arrow(compat_level=CompatLevel.oldest()).cast(pa.string()),
        ],
        fields=list(SPAN_TYPE),
    )
    take = pa.array(kept_rows)
    kept_ids = _string_column(sentences["id"]).take(take)
    is_validation = validation_mask(kept_ids, cfg.validation_fraction, cfg.seed)
    table = pa.table(
        {
            "id": kept_ids,
            "text": _string_column(sentences["text"]).take(take),
            "split": pa.array(np.where(is_validation, "validation", "train").tolist(), type=pa.string()),
            "spans": pa.ListArray.from_arrays(pa.array(offsets), span_struct),
        },
        schema=ANNOTATED_SCHEMA,
    )
    return table, kept_spans


def _string_column(series: pl.Series) -> pa.Array:
    return series.to_arrow(compat_level=CompatLevel.oldest()).cast(pa.string())


def check_accounting(counts: dict[str, int]) -> list[str]:
    """The sums every manifest must satisfy; returns what does not add up."""

    def total(prefix: str) -> int:
        return sum(v for k, v in counts.items() if k.startswith(prefix))

    problems = []
    lines = counts.get("lines", 0)
    parsed = counts.get("lines.parsed", 0)
    if lines != parsed + total("lines.dropped."):
        problems.append(f"lines {lines} != parsed {parsed} + dropped {total('lines.dropped.')}")
    found = sum(counts.get(f"entities.{s}", 0) for s in STATUSES)
    if parsed != found:
        problems.append(f"parsed lines {parsed} != entities by match status {found}")
    answers = counts.get("answers", 0)
    if answers != counts.get("sentences.kept", 0) + total("sentences.dropped."):
        problems.append(f"answers {answers} != kept {counts.get('sentences.kept', 0)} + dropped {total('sentences.dropped.')}")
    aligned = counts.get("mentions.aligned", 0)
    if aligned != counts.get("mentions.kept", 0) + total("mentions.dropped."):
        problems.append(f"mentions {aligned} != kept + dropped")
    return problems
