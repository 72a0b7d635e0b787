"""Files in and out for tagging: documents to read, label lists to parse, JSON lines of entities to write.

Input formats (chosen by the file name, ``.gz`` allowed on top):

- ``.jsonl``, ``.ndjson``, ``.json``: JSON lines, one object per line with a string field
  ``text`` (configurable) and optionally ``id`` (string or integer; default: the line number);
- anything else: plain text, one document per line, id = the line number (1-based).

Blank lines are skipped and counted. Any other problem (not UTF-8, not JSON, no ``text``) is
a DocumentError naming ``file:line``; with ``skip_bad`` such a line is skipped and counted
instead (``ReadStats.bad_lines``), so one bad document does not cost the others. Output: one JSON object per document::

    {"id": ..., "text": ..., "entities": [{"start", "end", "text", "label", "score"}]}

with character offsets into ``text`` (end exclusive), written to a temporary file and renamed
into place when complete.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator, Literal, Mapping, Sequence

from nuner_core.jsonl import JsonLinesError, decode_line, open_lines, parse_line
from nuner_core.stage_api import Progress, StageError
from nuner_core.tagging.decode import DEFAULT_DECODING, Decoding, check_decoding, check_threshold
from nuner_core.tagging.labels import label_thresholds
from nuner_core.tagging.settings import LabelError, clean_labels

if TYPE_CHECKING:  # reading documents and labels needs no torch; tagging them does (but on the ONNX backend)
    from nuner_core.tagging.onnx_backend import OnnxZeroShotTagger
    from nuner_core.tagging.tagger import ZeroShotTagger

    Tagger = ZeroShotTagger | OnnxZeroShotTagger

JSON_SUFFIXES = {".jsonl", ".ndjson", ".json"}


class DocumentError(StageError, ValueError):
    """An input line that cannot be read as a document; the message names file:line."""


@dataclass(frozen=True)
class Document:
    id: str | int
    text: str


@dataclass
class ReadStats:
    lines: int = 0
    documents: int = 0
    blank_lines: int = 0  # skipped: no document
    bad_lines: int = 0  # skipped with skip_bad: a DocumentError each
    first_bad: str | None = None  # the first of their errors, to show


def input_format(path: Path) -> Literal["jsonl", "text"]:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return "jsonl" if suffixes and suffixes[-1] in JSON_SUFFIXES else "text"


def iter_documents(
    path: str | Path,
    fmt: Literal["auto", "jsonl", "text"] = "auto",
    text_field: str = "text",
    stats: ReadStats | None = None,
    skip_bad: bool = False,
) -> Iterator[Document]:
    """Documents of one file, lazily (a million-line file is never held in memory)."""
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    if not path.is_file():
        raise DocumentError(f"{path}: no such file")
    fmt = input_format(path) if fmt == "auto" else fmt
    with open_lines(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            stats.lines += 1
            try:
                line = decode_line(raw, path, lineno)
                if not line.strip():
                    stats.blank_lines += 1
                    continue
                doc = _json_document(line, path, lineno, text_field) if fmt == "jsonl" else Document(lineno, line)
            except (JsonLinesError, DocumentError) as exc:
                if not skip_bad:
                    raise DocumentError(str(exc)) from None
                stats.bad_lines += 1
                stats.first_bad = stats.first_bad or str(exc)
                continue
            stats.documents += 1
            yield doc


def _json_document(line: str, path: Path, lineno: int, text_field: str) -> Document:
    record = parse_line(line, path, lineno)
    if not isinstance(record, dict):
        raise DocumentError(f"{path}:{lineno}: expected a JSON object with a {text_field!r} field, got {type(record).__name__}")
    if text_field not in record:
        raise DocumentError(f"{path}:{lineno}: no {text_field!r} field (fields: {', '.join(sorted(record)) or 'none'})")
    text = record[text_field]
    if not isinstance(text, str):
        raise DocumentError(f"{path}:{lineno}: {text_field!r} must be a string, not {type(text).__name__}")
    doc_id = record.get("id", lineno)
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        raise DocumentError(f"{path}:{lineno}: 'id' must be a string or an integer, not {doc_id!r}")
    return Document(doc_id, text)


def iter_files(
    paths: Sequence[str | Path],
    fmt: Literal["auto", "jsonl", "text"] = "auto",
    text_field: str = "text",
    skip_bad: bool = False,
    stats: ReadStats | None = None,
) -> tuple[int, Iterator[Document]]:
    """The documents of several files in order, lazily, and how many there are (for a progress bar).

    The count reads every document once, decoded and parsed, so that a bad line is reported
    here, before a model is loaded and before any work is done (``skip_bad``: counted in
    ``stats`` and left out of the documents).
    """
    check = stats if stats is not None else ReadStats()
    for path in paths:
        for _ in iter_documents(path, fmt, text_field, check, skip_bad):
            pass
    return check.documents, (doc for path in paths for doc in iter_documents(path, fmt, text_field, skip_bad=skip_bad))


def read_documents(path: str | Path, fmt: Literal["auto", "jsonl", "text"] = "auto", text_field: str = "text") -> list[Document]:
    """All documents of one file (see the module docstring for the formats)."""
    return list(iter_documents(path, fmt, text_field))


def parse_labels(value: str | Sequence[str]) -> list[str]:
    """Label names from ``"person, dish, price"`` (or several such strings): stripped, empties dropped,
    duplicates dropped keeping the first; none at all is a LabelError."""
    parts = [value] if isinstance(value, str) else list(value)
    labels = [label.strip() for part in parts for label in part.split(",")]
    labels = [label for label in labels if label]
    if not labels:
        raise LabelError(f"no labels in {value!r}: give comma-separated label names, e.g. \"person, dish, price\"")
    return clean_labels(labels)


def read_label_file(path: str | Path) -> list[str]:
    """Label names from a file, one per line (for thousands of labels); blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: no such label file")
    labels = []
    with open_lines(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                label = decode_line(raw, path, lineno).strip()
            except JsonLinesError as exc:
                raise LabelError(str(exc)) from None
            if label:
                labels.append(label)
    if not labels:
        raise LabelError(f"{path}: no labels (one label name per line)")
    return clean_labels(labels)


@dataclass
class TagSummary:
    documents: int = 0
    entities: int = 0
    per_label: dict[str, int] = field(default_factory=dict)  # every label, in the given order, zeros included
    words: int = 0
    seconds: float = 0.0
    threshold: float = 0.0
    thresholds: dict[str, float] = field(default_factory=dict)  # per label, as given
    decoding: str = DEFAULT_DECODING

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tag_documents(
    tagger: Tagger,
    documents: Iterable[Document],
    labels: Sequence[str],
    threshold: float | None,
    out_path: str | Path,
    progress: Progress | None = None,
    *,
    batch_size: int = 1024,
    total: int | None = None,
    thresholds: Mapping[str, float] | None = None,
    decoding: Decoding = DEFAULT_DECODING,
) -> TagSummary:
    """Tag documents in batches and write JSON lines to ``out_path``; counts per label.

    ``threshold`` None: the model's stored (calibrated) threshold, else the default;
    ``thresholds`` {label: p} per label and ``decoding`` as in ``ZeroShotTagger.predict``.

    ``total`` (documents) is for the progress bar; taken from ``len(documents)`` when it has one.
    """
    labels = clean_labels(labels)
    threshold = check_threshold(tagger.threshold if threshold is None else threshold)
    label_thresholds(labels, threshold, thresholds)  # checked before any output is written
    options = {"thresholds": thresholds, "decoding": check_decoding(decoding)}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.partial")
    total = total if total is not None else (len(documents) if hasattr(documents, "__len__") else None)  # type: ignore[arg-type]
    summary = TagSummary(per_label={label: 0 for label in labels}, threshold=threshold, thresholds=dict(thresholds or {}), decoding=decoding)
    started = time.perf_counter()
    words_before = tagger.stats.words
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            batch: list[Document] = []
            for doc in documents:
                batch.append(doc)
                if len(batch) >= batch_size:
                    _tag_batch(tagger, batch, labels, threshold, out, summary, options)
                    batch = []
                    if progress is not None:
                        progress.update(summary.documents, total, f"{summary.entities:,} entities")
            if batch:
                _tag_batch(tagger, batch, labels, threshold, out, summary, options)
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    summary.words = tagger.stats.words - words_before
    summary.seconds = round(time.perf_counter() - started, 3)
    if progress is not None:
        progress.update(summary.documents, total if total is not None else summary.documents, f"{summary.entities:,} entities")
    return summary


def _tag_batch(
    tagger: Tagger, batch: list[Document], labels: list[str], threshold: float, out: IO[str], summary: TagSummary, options: dict[str, Any]
) -> None:
    for doc, entities in zip(batch, tagger.predict([d.text for d in batch], labels, threshold, **options)):
        out.write(json.dumps({"id": doc.id, "text": doc.text, "entities": [e.as_dict() for e in entities]}, ensure_ascii=False) + "\n")
        summary.documents += 1
        summary.entities += len(entities)
        for e in entities:
            summary.per_label[e.label] += 1
