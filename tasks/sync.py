"""Prefect's dual sync/async functions (``async_dispatch``), called from our sync code."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def sync_result(value: T | Coroutine[Any, Any, T]) -> T:
    """The value of a dual function called from sync code.

    Functions such as ``create_progress_artifact`` or ``Block.load`` are typed ``T | Coroutine[..., T]``:
    they return the coroutine only when called inside an event loop, which the stage tasks and the
    flows (all sync) never are.
    """
    if isinstance(value, Coroutine):
        value.close()  # never awaited: closing it spares a "coroutine was never awaited" warning
        raise TypeError("a Prefect function returned a coroutine: it was called from async code, where it must be awaited")
    return value
