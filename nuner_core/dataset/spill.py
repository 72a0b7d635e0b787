"""The dataset stage's scanned batches on disk, so that its memory follows the batch size, not the input.

The global filters (duplicate ids, the top-concept cut, the subsample) need every sentence
before any row can be written; what they need per sentence is small (its id, a drop reason,
a few counts) and stays in memory. Each batch's sentences (id, text) and aligned spans go to
two Arrow IPC files (uncompressed: written once, read back two or three times), one file for
all batches rather than a file each (the opening and closing dominated at small batches),
and are read back one batch at a time, in order, without memory-mapping (mapped pages count
as the process's memory once touched).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Iterator

import polars as pl
import pyarrow as pa
from polars import CompatLevel


class Spill:
    """Every batch's sentences and spans in ``root``; span ``sid`` is the sentence's global index.
    ``add`` every batch, ``close``, then read them back as often as needed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.offsets = [0]  # the global index of each batch's first sentence; the last: the total
        self._chunks: dict[str, list[int]] = {"sentences": [0], "spans": [0]}  # record batches so far, per batch
        self._writers: dict[str, pa.ipc.RecordBatchFileWriter] = {}

    def add(self, sentences: pl.DataFrame, spans: pl.DataFrame) -> None:
        for name, frame in (("sentences", sentences), ("spans", spans)):
            table = frame.to_arrow(compat_level=CompatLevel.oldest())
            if name not in self._writers:
                self._writers[name] = pa.ipc.new_file(str(self.root / f"{name}.arrow"), table.schema)
            batches = table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]
            for batch in batches:
                self._writers[name].write_batch(batch)
            self._chunks[name].append(self._chunks[name][-1] + len(batches))
        self.offsets.append(self.offsets[-1] + sentences.height)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _read(self, name: str) -> Iterator[pl.DataFrame]:
        if len(self.offsets) == 1:
            return
        with ExitStack() as stack:
            reader = pa.ipc.open_file(stack.enter_context(pa.OSFile(str(self.root / f"{name}.arrow"))))
            bounds = self._chunks[name]
            for start, stop in zip(bounds, bounds[1:]):
                frame = pl.from_arrow(pa.Table.from_batches([reader.get_batch(j) for j in range(start, stop)], reader.schema))
                assert isinstance(frame, pl.DataFrame)
                yield frame

    def spans(self) -> Iterator[pl.DataFrame]:
        """Each batch's spans in turn."""
        return self._read("spans")

    def batches(self) -> Iterator[tuple[int, pl.DataFrame, pl.DataFrame]]:
        """(offset, sentences, spans) of each batch in turn."""
        for offset, sentences, spans in zip(self.offsets, self._read("sentences"), self._read("spans")):
            yield offset, sentences, spans
