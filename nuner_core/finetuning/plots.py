"""The loss curve: training and dev loss, and dev entity F1, of every run (encoder x seed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nuner_core.plotting import one_at_a_time


@one_at_a_time
def loss_curve(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """rows: metrics.jsonl rows (run, seed, kind train/dev, step, loss, f1). Writes a PNG."""
    runs = sorted({(r["run"], r["seed"]) for r in rows}, key=lambda x: (x[0] != "nuner", x))
    names = sorted({name for name, _ in runs}, key=lambda n: n != "nuner")
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for name, seed in runs:
        color = f"C{names.index(name)}"
        mine = [r for r in rows if r["run"] == name and r["seed"] == seed]
        train = [(r["step"], r["loss"]) for r in mine if r["kind"] == "train" and r["loss"] is not None]
        dev = [r for r in mine if r["kind"] == "dev"]
        first = seed == min(s for n, s in runs if n == name)
        if train:
            ax_loss.plot(*zip(*train), color=color, lw=1.0, alpha=0.7, label=f"{name} train" if first else None)
        if dev:
            ax_loss.plot([r["step"] for r in dev], [r["loss"] for r in dev], color=color, lw=1.3, ls="--", alpha=0.9,
                         label=f"{name} dev" if first else None)  # fmt: skip
            scored = [r for r in dev if r.get("f1") is not None]  # a tagger adaptation selects on dev loss: no dev F1
            ax_f1.plot([r["epoch"] for r in scored], [r["f1"] for r in scored], color=color, lw=1.3, marker="o", ms=2.5, alpha=0.85,
                       label=name if first else None)  # fmt: skip
    ax_loss.set_xlabel("optimiser step")
    ax_loss.set_ylabel("cross-entropy (token; tagger: token x concept)")
    ax_loss.set_yscale("log")
    ax_loss.grid(alpha=0.3, which="both")
    ax_loss.legend(fontsize=8)
    ax_loss.set_title("loss (one line per seed)")
    ax_f1.set_xlabel("epoch")
    ax_f1.set_ylabel("dev entity micro-F1")
    ax_f1.set_ylim(0, 1)
    ax_f1.grid(alpha=0.3)
    if any(r["kind"] == "dev" for r in rows):
        ax_f1.legend(fontsize=8)
    ax_f1.set_title("dev entity F1 (early stopping)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
