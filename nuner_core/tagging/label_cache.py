"""The label-vector cache of both tagger backends: one bounded LRU per tagger, label string -> vector.

A long-lived tagger (``nuner serve``, shared by every client's label sets) keeps a fixed size:
at most ``max_labels`` vectors, the least recently used dropped first. More labels than that
in one call still work: the call's fresh vectors are handed back with the cached ones. Hits
and misses are counted in the tagger's ``TagStats`` (``label_cache_hits``, ``labels_encoded``).
No torch here: the ONNX backend uses it too.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Generic, TypeVar

from nuner_core.tagging.plan import TagStats

V = TypeVar("V")
DEFAULT_MAX_LABELS = 100_000  # about 150 MB of 384-wide fp32 vectors; thousands of labels per request fit many times


class LabelCache(Generic[V]):
    """Bounded LRU of label vectors; ``lookup`` embeds the missing labels with the given function."""

    def __init__(self, stats: TagStats, max_labels: int = DEFAULT_MAX_LABELS) -> None:
        if isinstance(max_labels, bool) or not isinstance(max_labels, int) or max_labels < 1:
            raise ValueError(f"max_labels must be a positive number of cached label vectors, not {max_labels!r}")
        self.stats = stats
        self.max_labels = max_labels
        self._vectors: OrderedDict[str, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, label: object) -> bool:
        return label in self._vectors

    def clear(self) -> None:
        self._vectors.clear()

    def lookup(self, labels: list[str], embed: Callable[[list[str]], dict[str, V]]) -> list[V]:
        """The vector of each label (in order): cached ones refreshed, the missing ones from one ``embed`` call."""
        missing = list(dict.fromkeys(label for label in labels if label not in self._vectors))
        for label in labels:
            if label in self._vectors:
                self._vectors.move_to_end(label)
                self.stats.label_cache_hits += 1
        fresh = embed(missing) if missing else {}
        self.stats.labels_encoded += len(missing)
        rows = [fresh[label] if label in fresh else self._vectors[label] for label in labels]
        self._vectors.update(fresh)
        while len(self._vectors) > self.max_labels:
            self._vectors.popitem(last=False)
        return rows
