"""What a user looks at: the concept frequency by rank (paper Figure 4) and the top concepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from nuner_core.plotting import one_at_a_time


@one_at_a_time
def plot_concept_frequency(concepts: pl.DataFrame, path: Path, title: str = "Concept frequency by rank") -> Path:
    """Log-log plot of each concept's mentions against its frequency rank; writes a PNG."""
    mentions = concepts["mentions"].to_numpy()  # (C,), most frequent first
    ranks = np.arange(1, len(mentions) + 1)
    fig = Figure(figsize=(6, 4.2), dpi=110)
    ax = fig.add_subplot()
    if len(mentions):
        ax.loglog(ranks, mentions, marker=".", markersize=3, linewidth=1, color="#1f5fa8")
    ax.set_xlabel("concept rank")
    ax.set_ylabel("mentions")
    once = int((mentions == 1).sum())
    ax.set_title(f"{title}\n{len(mentions):,} concepts, {int(mentions.sum()):,} mentions, {once:,} seen once", fontsize=10)
    ax.grid(True, which="both", linewidth=0.3, alpha=0.6)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def top_concepts_table(concepts: pl.DataFrame, rows: int) -> list[dict[str, Any]]:
    """The ``rows`` most frequent concepts: rank, concept, mentions, sentences, share of mentions."""
    total = max(int(concepts["mentions"].sum()), 1)
    return [
        {
            "rank": rank,
            "concept": row["concept"],
            "mentions": row["mentions"],
            "sentences": row["sentences"],
            "share_pct": round(100.0 * row["mentions"] / total, 2),
        }
        for rank, row in enumerate(concepts.head(rows).iter_rows(named=True), start=1)
    ]
