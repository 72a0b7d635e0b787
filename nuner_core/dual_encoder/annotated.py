"""A dataset artifact's annotated sentences, as pre-training trains on them and calibration scores them.

Input: the dataset stage's ``annotated.parquet`` (``id``, ``text``, ``split`` train /
validation, ``spans: list<struct<start, end, concept>>``, character offsets, end exclusive).
Every record or span that cannot be used is counted under a reason, never dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from nuner_core.stage_api import StageError

REQUIRED_COLUMNS = ("id", "text", "split", "spans")
SPLITS = ("train", "validation")

Span = tuple[int, int, str]  # (start, end, concept): characters [start, end) of the text


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    spans: tuple[Span, ...]


@dataclass
class Annotated:
    train: list[Example]
    validation: list[Example]
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> count


def load_annotated(path: Path) -> Annotated:
    """Read and check ``annotated.parquet``; bad records and spans are counted under a reason."""
    if not path.is_file():
        raise StageError(f"{path}: no such file; the pretrain stage reads the dataset stage's annotated.parquet")
    table = pq.read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise StageError(f"{path}: missing column(s) {missing}; found {table.column_names}")
    out = Annotated(train=[], validation=[])
    for rec in table.select(list(REQUIRED_COLUMNS)).to_pylist():
        text, split = rec["text"], rec["split"]
        if not isinstance(text, str) or not text.strip():
            out.dropped["empty_text"] += 1
            continue
        if split not in SPLITS:
            out.dropped[f"unknown_split:{split}"] += 1
            continue
        spans: list[Span] = []
        for span in rec["spans"] or []:
            start, end, concept = span.get("start"), span.get("end"), span.get("concept")
            if not isinstance(concept, str) or not concept.strip():
                out.dropped["span_without_concept"] += 1
            elif start is None or end is None or not 0 <= start < end <= len(text):
                out.dropped["span_out_of_range"] += 1
            else:
                spans.append((int(start), int(end), concept.strip()))
        (out.train if split == "train" else out.validation).append(Example(str(rec["id"]), text, tuple(spans)))
    if not out.train:
        raise StageError(
            f"{path}: no usable training sentences ({table.num_rows} rows; dropped: {dict(out.dropped) or 'none'}); "
            "check the dataset stage's split and filters"
        )
    return out
