"""Measured time per sentence, kept across runs: so a rerun served from caches still reports what the work costs.

The evaluation compares competitors on time per 1,000 test sentences (paper section 6):
an encoder's encoding time, an LLM's answering time. Both are measured only when the work
is done; a rerun that reads features or answers from the cache measures nothing. Each
measurement is therefore added to a small JSON file in the evaluation cache, keyed by what
determines the time (encoder identity and device and data; LLM identity and cell), and the
summary reports the accumulated rate, saying whether it was measured in this run or an
earlier one. Files are replaced atomically; two runs writing the same key at once may lose
one measurement, never corrupt the file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from nuner_core.hashing import short_hash


@dataclass(frozen=True)
class Measured:
    sentences: int  # sentences timed, over every run that recorded this key
    seconds: float  # their wall seconds
    runs: int  # how many runs contributed

    @property
    def per_1k(self) -> float:
        return 1000 * self.seconds / self.sentences


class TimingStore:
    def __init__(self, root: Path):
        self.root = Path(root) / "timings"

    def _path(self, key: str) -> Path:
        return self.root / (short_hash(key, 24) + ".json")

    def record(self, key: str, sentences: int, seconds: float, detail: Mapping[str, Any] | None = None) -> None:
        """Add one measurement of ``sentences`` in ``seconds``."""
        if sentences <= 0:
            return
        before = self.rate(key)
        total = Measured(sentences + (before.sentences if before else 0), seconds + (before.seconds if before else 0.0),
                         1 + (before.runs if before else 0))
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        part.write_text(json.dumps({"key": key, "sentences": total.sentences, "seconds": total.seconds, "runs": total.runs,
                                    "updated": time.time(), **dict(detail or {})}))
        os.replace(part, path)

    def rate(self, key: str) -> Measured | None:
        """Everything recorded for ``key``, or None."""
        path = self._path(key)
        try:
            raw = json.loads(path.read_text())
            return Measured(int(raw["sentences"]), float(raw["seconds"]), int(raw["runs"])) if raw["sentences"] > 0 else None
        except (OSError, ValueError, KeyError, TypeError):
            return None
