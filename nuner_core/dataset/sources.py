"""Where annotations come from: the annotate stage's responses, or an existing annotated corpus.

Every source yields batches of one shape, ``id`` (str), ``text`` (str) and ``lines``
(``list[str]``, the answer's lines; null when the LLM call failed), and counts what it
could not read (``sentences.dropped.malformed_record``, ``lines.dropped.non_string``, ...),
keeping a few examples naming the record so a user can look at them.

- ``responses``: ``responses.parquet`` as written by the annotate stage (DESIGN.md).
- ``nuner_csv``: the released NuNER data set, CSV with ``input`` (the sentence) and
  ``output``, a Python-literal list of ``"span <> concept"`` strings, read with
  ``ast.literal_eval`` (literals only, never code).
- ``pile_ner``: UniversalNER's Pile-NER (a JSON list, or JSON lines) of
  ``{"id", "conversations": [{"from": "human", "value": "Text: ..."}, {"from": "gpt", ...},
  {"from": "human", "value": "What describes X in the text?"}, {"from": "gpt", "value": "[\\"a\\", ...]"}, ...]}``.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from nuner_core.dataset.parse import split_answer
from nuner_core.jsonl import read_json_lines
from nuner_core.stage_api import StageError

RESPONSES_FILE = "responses.parquet"
MAX_EXAMPLES = 10  # examples of unreadable records kept per reason
_STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view(), pa.null())
_PILE_QUESTION = re.compile(r"^\s*What describes (.+?) in the text\?\s*$", re.DOTALL)


class SourceError(StageError):
    """The input cannot be read at all (missing file, wrong format, wrong column types)."""


@dataclass
class SourceLog:
    """What a source could not read: counts plus a few examples naming the record."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, key: str, example: str, n: int = 1) -> None:
        self.counts[key] += n
        bucket = self.examples.setdefault(key, [])
        if len(bucket) < MAX_EXAMPLES:
            bucket.append(example)


def _batch(ids: list[str], texts: list[str | None], lines: list[list[str] | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": ids, "text": texts, "lines": lines},
        schema={"id": pl.String, "text": pl.String, "lines": pl.List(pl.String)},
    )


# ----------------------------------------------------------------------------- responses


def read_responses(path: Path, batch_size: int, log: SourceLog) -> Iterator[pl.DataFrame]:
    """Batches from a ``responses.parquet`` file.

    A row whose call failed (``response`` null, or ``error`` set, whatever ``response``
    holds) yields null ``lines``: the build drops it as ``failed_response``, counted per
    reason. It is never read as an empty answer, which would mean "the LLM found no entity"
    and teach the model that the sentence has none.
    """
    if not path.is_file():
        raise SourceError(f"responses file {path} does not exist")
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"responses file {path} is not a readable Parquet file: {exc}") from None
    schema = file.schema_arrow
    for name in ("id", "text", "response"):
        if name not in schema.names:
            raise SourceError(f"responses file {path} has no column {name!r} (columns: {', '.join(schema.names)})")
        if schema.field(name).type not in _STRING_TYPES:
            raise SourceError(
                f"responses file {path}: column {name!r} has type {schema.field(name).type}, expected string"
            )
    if file.metadata.num_rows == 0:
        raise SourceError(f"responses file {path} has no rows: nothing to build a training set from")
    has_error = "error" in schema.names
    columns = ["id", "text", "response"] + (["error"] if has_error else [])
    batches = file.iter_batches(batch_size=batch_size, columns=columns)
    while True:
        try:
            record_batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:  # damaged bytes past the footer
            raise SourceError(
                f"responses file {path} cannot be read ({type(exc).__name__}: {exc}): it is damaged; rerun the "
                f"annotate stage to rebuild it"
            ) from None
        if record_batch is None:
            break
        table = pl.from_arrow(record_batch)
        assert isinstance(table, pl.DataFrame)  # a record batch converts to a frame, never a series
        frame = table.with_columns(pl.col("id", "text", "response").cast(pl.String))
        failed_call = pl.col("response").is_null()
        if has_error:
            frame = frame.with_columns(pl.col("error").cast(pl.String))
            failed_call = failed_call | pl.col("error").is_not_null()
        frame = frame.with_columns(_failed=failed_call)
        failed = frame.filter(pl.col("_failed") & pl.col("text").is_not_null() & pl.col("id").is_not_null())
        if has_error and failed.height:  # annotate writes "<reason>: <detail>"
            reasons = failed["error"].fill_null("unknown").str.split(":").list.first().str.strip_chars()
            for reason, n in reasons.value_counts().iter_rows():
                log.counts[f"failed_response.{reason or 'unknown'}"] += n
        for row in failed.head(MAX_EXAMPLES).iter_rows(named=True):
            bucket = log.examples.setdefault("sentences.dropped.failed_response", [])
            if len(bucket) < MAX_EXAMPLES:
                bucket.append(f"id {row['id']}: {row.get('error') or 'response is null'}")
        responses = frame.select(pl.when(pl.col("_failed")).then(None).otherwise(pl.col("response")).alias("r"))["r"]
        yield frame.select("id", "text").with_columns(lines=split_answer(responses))


# ----------------------------------------------------------------------------- NuNER CSV


def read_nuner_csv(path: Path, batch_size: int, log: SourceLog) -> Iterator[pl.DataFrame]:
    """Batches from the released NuNER CSV (``input``, ``output``)."""
    if not path.is_file():
        raise SourceError(f"NuNER CSV {path} does not exist")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise SourceError(f"NuNER CSV {path} is empty: expected a header with 'input' and 'output'") from None
        except csv.Error as exc:
            raise SourceError(f"NuNER CSV {path}: unreadable header ({exc})") from None
        if "input" not in header or "output" not in header:
            raise SourceError(f"NuNER CSV {path}: header {header} lacks 'input' and/or 'output'")
        i_input, i_output = header.index("input"), header.index("output")
        ids: list[str] = []
        texts: list[str | None] = []
        lines: list[list[str] | None] = []
        record = 0
        while True:
            line_no = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                log.drop("sentences.dropped.malformed_record", f"{path.name} line {line_no}: {exc}")
                continue
            if not row:  # a blank line is no record
                continue
            record += 1
            where = f"{path.name} line {line_no} (record {record})"
            if len(row) != len(header):
                log.drop("sentences.dropped.malformed_record", f"{where}: {len(row)} fields, header has {len(header)}")
                continue
            items = _literal_list(row[i_output])
            if items is None:
                log.drop("sentences.dropped.malformed_record", f"{where}: output is not a Python list literal: {row[i_output][:80]!r}")
                continue
            kept = [x for x in items if isinstance(x, str)]
            if len(kept) != len(items):
                log.drop("lines.dropped.non_string", f"{where}: non-string annotation(s)", len(items) - len(kept))
                log.counts["lines"] += len(items) - len(kept)
            ids.append(f"{path.stem}:{record}")
            texts.append(row[i_input])
            lines.append([x.replace("\n", " ") for x in kept])
            if len(ids) >= batch_size:
                yield _batch(ids, texts, lines)
                ids, texts, lines = [], [], []
        if ids:
            yield _batch(ids, texts, lines)
    if record == 0 and not log.counts["sentences.dropped.malformed_record"]:
        raise SourceError(f"NuNER CSV {path} has a header but no records")


# A list of plain string literals (no backslash, no newline): what nearly every row holds.
# Its items read the same with a regex as with ast.literal_eval, five times faster.
_STR = r"'[^'\\\n]*'" + "|" + r'"[^"\\\n]*"'
_SIMPLE_LIST = re.compile(rf"\[\s*(?:(?:{_STR})\s*(?:,\s*(?:{_STR})\s*)*,?\s*)?\]")
_SIMPLE_ITEM = re.compile(r"'([^'\\\n]*)'" + "|" + r'"([^"\\\n]*)"')


def _literal_list(value: str) -> list[Any] | None:
    """A Python-literal list or tuple (``ast.literal_eval``: literals only), else None."""
    value = value.strip()
    if _SIMPLE_LIST.fullmatch(value):
        return [single or double for single, double in _SIMPLE_ITEM.findall(value)]
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return list(parsed) if isinstance(parsed, (list, tuple)) else None


# ----------------------------------------------------------------------------- Pile-NER


def read_pile_ner(path: Path, batch_size: int, log: SourceLog) -> Iterator[pl.DataFrame]:
    """Batches from Pile-NER conversations: each "What describes X" answer becomes ``entity <> X`` lines."""
    ids: list[str] = []
    texts: list[str | None] = []
    lines: list[list[str] | None] = []
    for index, record in _json_records(path, log):
        where = f"{path.name} record {index}"
        parsed = _pile_record(record, where, log)
        if parsed is None:
            continue
        rid, text, record_lines = parsed
        ids.append(rid)
        texts.append(text)
        lines.append(record_lines)
        if len(ids) >= batch_size:
            yield _batch(ids, texts, lines)
            ids, texts, lines = [], [], []
    if ids:
        yield _batch(ids, texts, lines)


def _json_records(path: Path, log: SourceLog) -> Iterator[tuple[int, Any]]:
    if not path.is_file():
        raise SourceError(f"Pile-NER file {path} does not exist")
    with path.open(encoding="utf-8") as fh:
        head = fh.read(4096).lstrip()
        fh.seek(0)
        if not head:
            raise SourceError(f"Pile-NER file {path} is empty")
        if head.startswith("["):
            try:
                records = json.load(fh)
            except json.JSONDecodeError as exc:
                raise SourceError(f"Pile-NER file {path} is not valid JSON: {exc}") from None
            yield from enumerate(records)
            return
    yield from read_json_lines(path, on_invalid=lambda exc: log.drop("sentences.dropped.malformed_record", str(exc)))


def _pile_record(record: Any, where: str, log: SourceLog) -> tuple[str, str, list[str]] | None:
    turns = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(turns, list):
        log.drop("sentences.dropped.malformed_record", f"{where}: no 'conversations' list")
        return None
    rid = record.get("id")
    rid = str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) else where
    text: str | None = None
    out: list[str] = []
    for i, turn in enumerate(turns):
        value = turn.get("value") if isinstance(turn, dict) else None
        if not isinstance(turn, dict) or turn.get("from") != "human" or not isinstance(value, str):
            continue
        if text is None and value.startswith("Text:"):
            text = value[len("Text:") :].strip()
            continue
        question = _PILE_QUESTION.match(value)
        if question is None:
            log.counts["pile_ner.other_turns"] += 1
            continue
        concept = question.group(1).replace("\n", " ")
        answer = turns[i + 1] if i + 1 < len(turns) else None
        answer_value = answer.get("value") if isinstance(answer, dict) and answer.get("from") == "gpt" else None
        try:
            entities = json.loads(answer_value) if isinstance(answer_value, str) else None
        except json.JSONDecodeError:
            entities = None
        if not isinstance(entities, list):
            log.counts["lines"] += 1
            log.drop("lines.dropped.malformed_answer", f"{where}: answer to {value.strip()!r} is not a JSON list")
            continue
        for entity in entities:
            if isinstance(entity, str):
                out.append(f"{entity.replace(chr(10), ' ')} <> {concept}")
            else:
                log.counts["lines"] += 1
                log.drop("lines.dropped.non_string", f"{where}: {concept!r} answer holds {entity!r}")
    if text is None:
        log.drop("sentences.dropped.malformed_record", f"{where}: no 'Text:' turn")
        return None
    return rid, text, out
