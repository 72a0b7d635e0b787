"""One figure at a time per process: matplotlib is not thread-safe (its mathtext parser fails at
random when two threads lay out tick labels at once), and the stages of an experiment's concurrent
points run in threads of one process. Every function that draws a figure is ``@one_at_a_time``."""

from __future__ import annotations

import functools
import threading
from typing import Callable, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_LOCK = threading.RLock()


def one_at_a_time(draw: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(draw)
    def locked(*args: P.args, **kwargs: P.kwargs) -> R:
        with _LOCK:
            return draw(*args, **kwargs)

    return locked
