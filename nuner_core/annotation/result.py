"""What an annotation run gives back: its counts, times and how it met other runs (for the manifest and the UI)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nuner_core.annotation.accounting import RunStats
from nuner_core.annotation.cache_import import ImportStats


@dataclass
class AnnotationResult:
    out_path: Path
    total: int
    stats: RunStats
    wall_s: float
    prompt_version: str
    import_stats: ImportStats | None = None
    missing: int = 0
    shards: int = 0
    limiter_wait_s: float = 0.0
    joined: str | None = None  # the other run this one met on the same sentences (and joined), if any

    @property
    def failed(self) -> int:
        """Sentences without an answer in the output: failed requests, and offline misses."""
        return sum(self.stats.failures.values()) + self.missing

    def failed_by_reason(self) -> dict[str, int]:
        reasons = dict(self.stats.failures)
        if self.missing:
            reasons["not_cached"] = self.missing
        return dict(sorted(reasons.items()))

    @property
    def requests_per_s(self) -> float:
        return self.stats.requests / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        out = self.stats.as_dict()
        out.update(
            total=self.total,
            missing_offline=self.missing,
            wall_s=round(self.wall_s, 3),
            requests_per_s=round(self.requests_per_s, 3),
            prompt_version=self.prompt_version,
            shards=self.shards,
            rate_limit_wait_s=round(self.limiter_wait_s, 3),
        )
        if self.joined:
            out["joined_run"] = self.joined
        if self.import_stats is not None:
            out["import"] = self.import_stats.as_dict()
        return out
