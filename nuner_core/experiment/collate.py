"""Collation: every point's evaluate results into one table, and the reported scores drawn from it.

(With ``report.stage: finetune`` the rows come from each point's finetune artifact instead:
``finetune_report``; the reported scores below are the evaluate stage's.)

``results.parquet`` has one row per point × encoder × benchmark × k × sampling (all
protocols and ks the points evaluated, not only the reported ones), with the point's
swept values as columns named by their dotted keys. The summary and the figure use the
reported protocol, k, benchmarks and encoder; the base (``is_base``) is the reference.
``reported_scores`` picks those out of the table; ``summary`` writes them as summary.md,
``figure`` draws them.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import polars as pl

from nuner_core.experiment.spec import Experiment, Point

AVERAGE = "average"
KEPT_COLUMNS = [
    "encoder", "encoder_ref", "is_base", "dataset", "protocol", "k", "seed", "metric", "value",
    "support_sentences", "test_sentences",
]  # fmt: skip

Status = Literal["built", "reused", "failed"]


@dataclass
class PointOutcome:
    """What became of one point in this run."""

    point: Point
    status: Status  # built: its pipeline ran here; reused: its reported stage's artifact existed; failed
    keys: dict[str, str] = field(default_factory=dict)  # stage -> planned artifact key
    artifact_dir: str | None = None  # the reported stage's artifact (report.stage: evaluate or finetune; None when failed)
    message: str = ""  # why it failed
    seconds: float = 0.0  # wall time of its pipeline run here
    flow_run: str | None = None  # the Prefect flow run (or deployment run) of the point, when it ran

    def as_dict(self) -> dict[str, Any]:
        return {
            "point": self.point.index, "label": self.point.label, "values": self.point.values,
            "overrides": self.point.overrides, "status": self.status, "keys": self.keys,
            "artifact_dir": self.artifact_dir, "message": self.message, "seconds": round(self.seconds, 1),
            "flow_run": self.flow_run,
        }  # fmt: skip


# ---------------------------------------------------------------- the table


def collate(experiment: Experiment, outcomes: Sequence[PointOutcome]) -> pl.DataFrame:
    """The rows of every point with a result artifact, tagged with the point and its swept values."""
    from nuner_core.experiment.finetune_report import finetune_rows

    stage = experiment.spec.report.stage
    frames = []
    for outcome in outcomes:
        if outcome.artifact_dir is None:
            continue
        if stage == "finetune":
            rows = finetune_rows(Path(outcome.artifact_dir)).select(KEPT_COLUMNS)
        else:
            rows = pl.read_parquet(Path(outcome.artifact_dir) / "results.parquet").select(KEPT_COLUMNS)
        tags: list[pl.Expr] = [pl.lit(outcome.point.index, pl.Int64).alias("point"), pl.lit(outcome.point.label).alias("label")]
        tags.append(pl.lit(json.dumps(outcome.point.values, sort_keys=True)).alias("values"))
        tags += [pl.lit(outcome.keys.get(s)).cast(pl.String).alias(f"{s}_key") for s in ("pretrain", stage)]
        frames.append(rows.with_columns(tags))
    if not frames:
        return pl.DataFrame(schema={"point": pl.Int64, "label": pl.String, **{c: pl.String for c in KEPT_COLUMNS}})
    table = pl.concat(frames, how="vertical_relaxed")
    # One column per swept key, typed when its values allow (null: the setting's "all").
    swept = []
    for key, values in experiment.spec.sweep.items():
        by_point = {p.index: p.values[key] for p in experiment.points}
        dtype = _dtype(values)
        column = [by_point[i] if dtype is not pl.String or by_point[i] is None else _as_text(by_point[i]) for i in table["point"].to_list()]
        swept.append(pl.Series(key, column, dtype=dtype))
    table = table.with_columns(swept)
    first = ["point", "label", *experiment.spec.sweep]
    return table.select(first + [c for c in table.columns if c not in first])


def _dtype(values: Sequence[Any]) -> Any:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pl.Int64
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pl.Float64
    if present and all(isinstance(v, bool) for v in present):
        return pl.Boolean
    return pl.String


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


# ---------------------------------------------------------------- the reported scores


@dataclass
class Cell:
    """F1 (%) of one point on one benchmark (or the average): per sampling, for the encoder and its base."""

    encoder: dict[int, float]  # seed -> F1 %
    base: dict[int, float]

    @property
    def mean(self) -> float:
        return statistics.mean(self.encoder.values())

    @property
    def std(self) -> float:
        return statistics.stdev(self.encoder.values()) if len(self.encoder) > 1 else 0.0

    @property
    def base_mean(self) -> float | None:
        return statistics.mean(self.base.values()) if self.base else None

    @property
    def base_std(self) -> float:
        return statistics.stdev(self.base.values()) if len(self.base) > 1 else 0.0

    def gains(self) -> list[float]:
        """Paired by sampling: the same support sets for the encoder and its base."""
        return [self.encoder[s] - self.base[s] for s in sorted(set(self.encoder) & set(self.base))]

    @property
    def gain_mean(self) -> float | None:
        gains = self.gains()
        return statistics.mean(gains) if gains else None

    @property
    def gain_std(self) -> float:
        gains = self.gains()
        return statistics.stdev(gains) if len(gains) > 1 else 0.0


@dataclass
class Scores:
    benchmarks: list[str]  # reported benchmarks, in evaluation order
    cells: dict[tuple[int, str], Cell]  # (point, benchmark or "average") -> cell
    base_names: dict[int, str]  # point -> the base encoder's reference
    samplings: int
    test_sentences: dict[str, int]
    problems: dict[int, str]  # point -> why it has no scores (the encoder is missing, ...)


def reported_scores(experiment: Experiment, table: pl.DataFrame) -> Scores:
    report = experiment.spec.report
    rows = table.filter((pl.col("protocol") == report.protocol) & (pl.col("k") == report.k)) if table.height else table
    available = rows["dataset"].unique(maintain_order=True).to_list() if rows.height else []
    benchmarks = [b for b in (report.benchmarks or available)]
    cells: dict[tuple[int, str], Cell] = {}
    base_names: dict[int, str] = {}
    problems: dict[int, str] = {}
    samplings = 0
    tests: dict[str, int] = {}
    for point in sorted(set(rows["point"].to_list())) if rows.height else []:
        mine = rows.filter(pl.col("point") == point)
        enc = mine.filter(pl.col("encoder") == report.encoder)
        base = mine.filter(pl.col("is_base"))
        if enc.height == 0:
            problems[point] = f"no encoder {report.encoder!r} in its evaluation (encoders: {sorted(set(mine['encoder']))})"
            continue
        if base.height:
            base_names[point] = base["encoder_ref"][0]
        per_bench: list[Cell] = []
        for bench in benchmarks:
            e = {r["seed"]: 100 * r["value"] for r in enc.filter(pl.col("dataset") == bench).iter_rows(named=True)}
            b = {r["seed"]: 100 * r["value"] for r in base.filter(pl.col("dataset") == bench).iter_rows(named=True)}
            if not e:
                problems[point] = f"no {report.protocol} k={report.k} scores on {bench}"
                break
            cells[(point, bench)] = Cell(e, b)
            per_bench.append(cells[(point, bench)])
            samplings = max(samplings, len(e))
            tests[bench] = int(enc.filter(pl.col("dataset") == bench)["test_sentences"][0])
        else:
            seeds = set.intersection(*(set(c.encoder) for c in per_bench))
            base_seeds = set.intersection(*(set(c.base) for c in per_bench)) if all(c.base for c in per_bench) else set()
            cells[(point, AVERAGE)] = Cell(
                {s: statistics.mean(c.encoder[s] for c in per_bench) for s in sorted(seeds)},
                {s: statistics.mean(c.base[s] for c in per_bench) for s in sorted(base_seeds)},
            )
    return Scores(benchmarks, cells, base_names, samplings, tests, problems)
