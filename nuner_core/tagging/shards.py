"""Tagging split into shards (``tag.shards``): which documents each shard holds, its content key, the merge.

A shard is a contiguous run of the input's documents (all files in order, blank lines skipped):
shard ``i`` of ``n`` holds documents ``[i * total // n, (i + 1) * total // n)``. So the split
depends on the documents only, the same input always gives the same shards, and concatenating
the shards' outputs in shard order gives the documents back in input order. Each shard is keyed
by a hash of its own documents (ids and texts), not of the whole files: a change to one document
re-tags its shard only, as long as the document count stays the same.

Prefect-free: the flow (``flows/shards.py``) runs each shard as its own ``nuner`` run of the tag
stage with ``tag.shard`` set, and the sharded run's tag stage merges their outputs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Literal, Sequence

from nuner_core.tagging.documents import Document, iter_documents

Format = Literal["auto", "jsonl", "text"]


@dataclass(frozen=True)
class Split:
    """How the documents of some files fall into ``n`` shards."""

    total: int  # documents in all files
    bounds: tuple[tuple[int, int], ...]  # per shard: [start, end) in document order
    digests: tuple[str, ...]  # per shard: sha256 of its documents' ids and texts, in order


def bounds(total: int, n: int) -> tuple[tuple[int, int], ...]:
    """``n`` contiguous ranges covering ``range(total)``, sizes differing by at most one (some empty when n > total)."""
    if n < 1:
        raise ValueError(f"shards must be at least 1, got {n}")
    return tuple((i * total // n, (i + 1) * total // n) for i in range(n))


def input_name(index: int) -> str:
    """The name under which the sharded run's tag stage gets shard ``index``'s artifact as an input."""
    return f"tag-shard-{index}"


def split(files: Sequence[str | Path], n: int, fmt: Format = "auto", text_field: str = "text") -> Split:
    """The shards of ``files`` (read twice: once to count, once to hash; remembered per file state in this process)."""
    identity = tuple((str(Path(f).resolve()), _state(Path(f))) for f in files)
    return _split(identity, n, fmt, text_field)


def _state(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@lru_cache(maxsize=16)
def _split(identity: tuple[tuple[str, tuple[int, int]], ...], n: int, fmt: Format, text_field: str) -> Split:
    files = [path for path, _ in identity]
    total = sum(1 for _ in _documents(files, fmt, text_field))
    ranges = bounds(total, n)
    hashers = [hashlib.sha256() for _ in ranges]
    shard = 0
    for position, doc in enumerate(_documents(files, fmt, text_field)):
        while position >= ranges[shard][1]:
            shard += 1
        hashers[shard].update(json.dumps([doc.id, doc.text], ensure_ascii=False).encode() + b"\n")
    return Split(total, ranges, tuple(h.hexdigest() for h in hashers))


def _documents(files: Sequence[str | Path], fmt: Format, text_field: str) -> Iterator[Document]:
    return (doc for path in files for doc in iter_documents(path, fmt, text_field))


def shard_documents(files: Sequence[str | Path], n: int, index: int, fmt: Format = "auto", text_field: str = "text") -> tuple[int, Iterator[Document]]:
    """The documents of shard ``index`` of ``n``, lazily, and how many there are."""
    start, end = split(files, n, fmt, text_field).bounds[index]
    return end - start, itertools.islice(_documents(files, fmt, text_field), start, end)


def merge(parts: Sequence[Path], out_path: Path) -> None:
    """Concatenate the shards' JSON lines in shard order (= input order) into ``out_path``, renamed into place when complete."""
    tmp = out_path.with_name(f".{out_path.name}.partial")
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
