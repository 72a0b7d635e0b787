"""The loss curve: training and validation loss of the main run and its controls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nuner_core.plotting import one_at_a_time


@one_at_a_time
def loss_curve(runs: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """runs: name -> metrics rows (kind train/val, step, loss). Writes a PNG."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for i, (name, rows) in enumerate(runs.items()):
        color = f"C{i}"
        train = [(r["step"], r["loss"]) for r in rows if r["kind"] == "train" and r["loss"] is not None]
        val = [(r["step"], r["loss"]) for r in rows if r["kind"] == "val" and r["loss"] is not None]
        if train:
            ax.plot(*zip(*train), color=color, lw=1.2, alpha=0.8, label=f"{name} train")
        if val:
            ax.plot(*zip(*val), color=color, lw=1.5, ls="--", marker="o", ms=3, label=f"{name} validation")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("binary cross-entropy")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("pre-training loss")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
