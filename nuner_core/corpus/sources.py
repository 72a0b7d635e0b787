"""Reading documents from a hub data set or local files, through one ``datasets`` code path.

Every source becomes a streamed ``datasets.IterableDataset`` read in batches, so memory
stays bounded whatever the corpus size and a hub stream is never materialised. Local
files are opened one at a time so that an error can name the file; when ``datasets``
cannot parse one, the file is scanned to name the offending line.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

from nuner_core.corpus.config import CorpusSource
from nuner_core.jsonl import JsonLinesError, read_json_lines
from nuner_core.paths import expand_path
from nuner_core.stage_api import StageError


class CorpusInputError(StageError):
    """Bad corpus input; the message names the file (and line when there is one)."""


@dataclass(frozen=True)
class Document:
    text: object  # usually str; anything else is counted and dropped by the caller
    doc_id: str
    source: str


def local_files(source: CorpusSource) -> list[Path]:
    """The files a local source names (a path or a glob), sorted; an error when there are none."""
    pattern = expand_path(source.path)
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not matches:
        raise CorpusInputError(f"corpus source {source.path!r} (expanded: {pattern}) matches no file")
    return matches


def file_format(path: Path, declared: str | None) -> str:
    if declared:
        return declared
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "json"
    raise CorpusInputError(f"{path}: cannot tell the format from the name; set format: json or parquet")


def iter_documents(source: CorpusSource, batch_size: int) -> Iterator[Document]:
    """Every record of a source as a Document, in a stable order."""
    if source.kind == "hub":
        yield from _iter_hub(source, batch_size)
        return
    remaining = source.max_documents
    for path in local_files(source):
        for doc in _iter_file(path, source, batch_size):
            if remaining is not None:
                if remaining == 0:
                    return
                remaining -= 1
            yield doc


def _iter_hub(source: CorpusSource, batch_size: int) -> Iterator[Document]:
    from datasets import load_dataset

    stream = load_dataset(source.path, source.name, split=source.split, streaming=True)
    if source.max_documents is not None:
        stream = stream.take(source.max_documents)
    label = f"{source.path}/{source.name or ''}/{source.split}"
    for offset, record in _batched_records(stream, batch_size, source.text_field, label):
        doc_id = record.get("id") or record.get("url") or f"{label}#{offset}"
        yield Document(record.get(source.text_field), str(doc_id), source.path)


def _iter_file(path: Path, source: CorpusSource, batch_size: int) -> Iterator[Document]:
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError
    from pyarrow import ArrowInvalid

    fmt = file_format(path, source.format)
    if path.stat().st_size == 0:
        return  # an empty file holds no documents; an empty corpus overall is an error later
    stream = load_dataset(fmt, data_files=[str(path)], split="train", streaming=True)
    try:
        for offset, record in _batched_records(stream, batch_size, source.text_field, str(path)):
            doc_id = record.get("id") or f"{path.name}:{offset + 1}"
            yield Document(record.get(source.text_field), str(doc_id), str(path))
    except (ArrowInvalid, DatasetGenerationError, UnicodeDecodeError, ValueError) as exc:
        if fmt == "json":
            diagnose_json_lines(path)  # raises with the line number when it finds the culprit
        raise CorpusInputError(f"{path}: cannot be read as {fmt}: {exc}") from None


class _BatchStream(Protocol):
    """What is used of a streamed ``datasets.IterableDataset`` (the library has no type information)."""

    def iter(self, batch_size: int) -> Iterator[dict[str, list[Any]]]: ...


def _batched_records(stream: _BatchStream, batch_size: int, text_field: str, label: str) -> Iterator[tuple[int, dict[str, Any]]]:
    offset = 0
    for batch in stream.iter(batch_size=batch_size):
        if text_field not in batch:
            fields = ", ".join(sorted(batch)) or "none"
            raise CorpusInputError(f"{label}: records have no field {text_field!r} (fields: {fields}); set text_field")
        columns = list(batch)
        for row in zip(*(batch[c] for c in columns)):
            yield offset, dict(zip(columns, row))
            offset += 1


def diagnose_json_lines(path: Path) -> None:
    """Find the first line of a JSON-lines file that is not a valid UTF-8 JSON object; raise naming it."""
    try:
        for _ in read_json_lines(path):
            pass
    except JsonLinesError as exc:
        raise CorpusInputError(str(exc)) from None


def fingerprint_sources(sources: tuple[CorpusSource, ...]) -> list[object]:
    """Identity of local inputs (name and size of every matched file) for the artifact key."""
    prints: list[object] = []
    for source in sources:
        if source.kind == "hub":
            prints.append([source.path, source.name, source.split])
            continue
        try:
            files = local_files(source)
        except CorpusInputError:
            prints.append([source.path, "missing"])  # the stage itself reports the error
            continue
        prints.append([[f.name, os.path.getsize(f)] for f in files])
    return prints
