"""Words and windows: how raw text becomes words, and how a long word sequence becomes model inputs.

One word segmentation serves training on JSON-lines spans and tagging raw text, so a model
sees at prediction time the same kind of words it was trained on: runs of letters and digits
(joined across an apostrophe or a hyphen, and across ``.``/``,`` between digits: ``don't``,
``state-of-the-art``, ``3.5``, ``1,000``), and every other non-space character on its own
(``Paris,`` is ``Paris`` and ``,``), close to CoNLL's tokenisation.

A sentence (or text) longer than one window is covered by overlapping windows of whole words;
each word is *owned* by the window in which it has the most context on its shorter side, and
only there is it labelled (training) or read (prediction): every word exactly once.
"""

from __future__ import annotations

import re
from typing import Sequence

WORD_PATTERN = r"\w+(?:(?:['’\-]|(?<=\d)[.,](?=\d))\w+)*|[^\w\s]"
WORD = re.compile(WORD_PATTERN)


def split_words(text: str, pattern: re.Pattern[str] = WORD) -> list[tuple[int, int]]:
    """Character ``(start, end)`` of every word of ``text``, in order (end exclusive)."""
    return [m.span() for m in pattern.finditer(text)]


def plan_windows(counts: Sequence[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """Word ranges ``[a, b)`` covering all words, each with at most ``budget`` sub-tokens.

    ``counts`` are sub-tokens per word. A window starts with up to ``stride`` sub-tokens of the
    previous one's last words (context), then takes new words while they fit. A single word
    longer than ``budget`` gets a window of its own (its sub-tokens beyond are cut at encoding).
    """
    n = len(counts)
    if n == 0:
        return [(0, 0)]
    windows: list[tuple[int, int]] = []
    a = 0
    while True:
        b, used = a, 0
        while b < n and (used + counts[b] <= budget or b == a):
            used += counts[b]
            b += 1
        windows.append((a, b))
        if b >= n:
            return windows
        # the next window: back off over the last words while their sub-tokens fit in the stride ...
        start, context = b, 0
        while start - 1 > a and context + counts[start - 1] <= stride:
            start -= 1
            context += counts[start]
        # ... but never so far that the first new word (b) no longer fits beside them
        while start < b and context + counts[b] > budget:
            context -= counts[start]
            start += 1
        a = start


def owners(counts: Sequence[int], windows: Sequence[tuple[int, int]]) -> list[int]:
    """For each word, the index of the window where its shorter side has the most sub-tokens (first on ties)."""
    prefix = [0]
    for c in counts:
        prefix.append(prefix[-1] + c)
    best: list[tuple[int, int]] = [(-1, -1)] * len(counts)  # (context, window)
    for w, (a, b) in enumerate(windows):
        for i in range(a, b):
            context = min(prefix[i] - prefix[a], prefix[b] - prefix[i + 1])
            if context > best[i][0]:
                best[i] = (context, w)
    return [w for _, w in best]
