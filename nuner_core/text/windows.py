"""Long texts in encoder-sized windows: the one windowing of tagging, prediction and fine-tuning.

A text is a sequence of words, each of some number of sub-tokens. Windows are runs of whole
words of at most ``budget`` sub-tokens: one window when the text fits; otherwise each next
window starts with up to ``stride`` sub-tokens of the previous one's last words (context) and
takes new words while they fit. A single word longer than ``budget`` gets a window of its own
(its sub-tokens beyond the budget are cut; its first one, which it is read from, is kept).

A word's **context** in a window is the number of sub-tokens between it and the nearer *cut*
edge of the window; an edge that is the start or the end of the text itself cuts nothing and
does not count. Each word is read (labelled in training, scored at prediction) from the
window where its context is largest, ties to the earlier window: every word exactly once,
where the encoder saw the most text on both sides of it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def plan_windows(counts: Sequence[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """Word ranges ``[a, b)`` covering all words, each with at most ``budget`` sub-tokens (see the module docstring).

    ``counts`` are sub-tokens per word (0 for a word the tokenizer turns into nothing).
    """
    if budget < 1:
        raise ValueError(f"a window must hold at least 1 sub-token, not {budget}")
    if not 0 <= stride < budget:
        raise ValueError(f"stride (the context carried into the next window) must be between 0 and {budget - 1}, not {stride}")
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
    """For each word, the index of the window it is read from: the most context on its cut sides (first on ties)."""
    n = len(counts)
    if len(windows) == 1:
        return [0] * n
    prefix = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])  # (n + 1,)
    best = np.full(n, -1, dtype=np.int64)
    owner = np.zeros(n, dtype=np.int64)
    unbounded = int(prefix[-1]) + 1  # more than any real context: the text's own edges cut nothing
    for w, (a, b) in enumerate(windows):
        i = np.arange(a, b)
        left = prefix[i] - prefix[a] if a > 0 else np.full(b - a, unbounded)
        right = prefix[b] - prefix[i + 1] if b < n else np.full(b - a, unbounded)
        context = np.minimum(left, right)
        better = context > best[a:b]
        best[a:b] = np.where(better, context, best[a:b])
        owner[a:b] = np.where(better, w, owner[a:b])
    return [int(x) for x in owner]
