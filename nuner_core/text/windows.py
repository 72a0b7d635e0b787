"""Overlapping windows over a text longer than the encoder's window, and which window scores each token.

A text of ``n`` content tokens (special tokens not counted) and a window of ``size`` content
tokens: one window when it fits; otherwise windows start every ``stride`` tokens, and the
last one is aligned to the end of the text so that it is full and nothing is left out.

A token's **context** in a window is its distance to the nearer *cut* edge of that window;
an edge that is the start or the end of the text itself cuts nothing and does not count.
Each token is scored from the window where its context is largest (ties: the earlier
window), i.e. where the encoder saw the most text on both sides of it. With the default
stride of half a window, every token of a long text has at least a quarter of a window of
context on each cut side.
"""

from __future__ import annotations

import numpy as np


def plan_windows(n: int, size: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Windows [start, end) of content tokens covering ``n`` tokens, ``size`` tokens each at most."""
    if size < 1:
        raise ValueError(f"window size must be at least 1 token, not {size}")
    stride = max(1, size // 2) if stride is None else stride
    if not 1 <= stride <= size:
        raise ValueError(f"stride must be between 1 and the window size {size}, not {stride}")
    if n <= size:
        return [(0, n)]
    starts = list(range(0, n - size, stride)) + [n - size]
    return [(s, s + size) for s in starts]


def best_window(n: int, windows: list[tuple[int, int]]) -> np.ndarray:
    """(n,) index of the window from which each of the ``n`` tokens is scored (see the module docstring)."""
    if len(windows) == 1:
        return np.zeros(n, dtype=np.int64)
    t = np.arange(n)
    context = np.full((len(windows), n), -1, dtype=np.int64)  # (W, n); -1: the token is not in the window
    for w, (start, end) in enumerate(windows):
        inside = (t >= start) & (t < end)
        left = t - start if start > 0 else np.full(n, n)  # the text's own start cuts no context
        right = end - 1 - t if end < n else np.full(n, n)
        context[w] = np.where(inside, np.minimum(left, right), -1)
    return context.argmax(axis=0)  # first maximum: the earlier window on ties
