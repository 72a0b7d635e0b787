"""The dataset stage's scanned batches on disk, so that its memory follows the batch size, not the input.

The global filters (duplicate ids, the top-concept cut, the subsample) need every sentence
before any row can be written; what they need per sentence is small (its id, a drop reason,
a few counts) and stays in memory. Each batch's sentences (id, text) and aligned spans go to
files of their own (Arrow IPC, uncompressed: written once, read back two or three times) and
are read back one batch at a time, in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import polars as pl


class Spill:
    """Batch ``i``'s sentences and spans in ``root``; span ``sid`` is the sentence's global index."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.offsets = [0]  # the global index of each batch's first sentence; the last: the total

    def add(self, sentences: pl.DataFrame, spans: pl.DataFrame) -> None:
        i = len(self.offsets) - 1
        sentences.write_ipc(self.root / f"{i}.sentences.arrow")
        spans.write_ipc(self.root / f"{i}.spans.arrow")
        self.offsets.append(self.offsets[-1] + sentences.height)

    def spans(self, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """Each batch's spans in turn (only ``columns`` when given)."""
        for i in range(len(self.offsets) - 1):
            yield pl.read_ipc(self.root / f"{i}.spans.arrow", columns=columns)

    def batches(self) -> Iterator[tuple[int, pl.DataFrame, pl.DataFrame]]:
        """(offset, sentences, spans) of each batch in turn."""
        for i, spans in enumerate(self.spans()):
            yield self.offsets[i], pl.read_ipc(self.root / f"{i}.sentences.arrow"), spans
