"""The learning-rate schedule both training loops use (pre-training and fine-tuning)."""

from __future__ import annotations

from typing import Callable


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """lr multiplier: linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return multiplier
