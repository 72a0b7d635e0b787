"""The evaluate artifact's tables: ``results.parquet``, ``support_sets.parquet``, shortfalls and headline."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import polars as pl
from polars.datatypes import DataType, DataTypeClass

from nuner_core.evaluation.benchmarks import Benchmark
from nuner_core.evaluation.sampling import Supports

PER_TYPE = pl.List(pl.Struct({"type": pl.String, "precision": pl.Float64, "recall": pl.Float64, "f1": pl.Float64,
                              "support": pl.Int64, "predicted": pl.Int64}))
SHORTFALL = pl.List(pl.Struct({"type": pl.String, "found": pl.Int64}))
RESULTS_SCHEMA: dict[str, DataType | DataTypeClass] = {
    "encoder": pl.String, "encoder_ref": pl.String, "encoder_id": pl.String, "is_base": pl.Boolean,
    "dataset": pl.String, "protocol": pl.String, "k": pl.Int64, "seed": pl.Int64, "metric": pl.String,
    "value": pl.Float64, "per_type": PER_TYPE, "support_sentences": pl.Int64, "support_mentions": pl.Int64,
    "shortfall": SHORTFALL, "test_sentences": pl.Int64, "fit_s": pl.Float64,
}


def results_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RESULTS_SCHEMA)


def write_support_sets(path: Path, benches: list[Benchmark], supports: Supports, grid: Sequence[tuple[int, int]]) -> int:
    rows = []
    for bench in benches:
        for k, seed in grid:
            for position, index in enumerate(supports[bench.name][(k, seed)].indices):
                sentence = bench.pool.sentences[index]
                rows.append({"dataset": bench.name, "k": k, "seed": seed, "position": position, "pool_index": index,
                             "tokens": list(sentence.tokens), "tags": list(sentence.tags)})
    schema: dict[str, DataType | DataTypeClass] = {"dataset": pl.String, "k": pl.Int64, "seed": pl.Int64, "position": pl.Int64, "pool_index": pl.Int64,
              "tokens": pl.List(pl.String), "tags": pl.List(pl.String)}
    pl.DataFrame(rows, schema=schema).write_parquet(path)
    return len(rows)


def shortfalls(benches: list[Benchmark], supports: Supports, grid: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    out = []
    for bench in benches:
        for k in sorted({k for k, _ in grid}):
            sets = [supports[bench.name][(kk, s)] for kk, s in grid if kk == k]
            short = [s for s in sets if s.shortfall]
            if not short:
                continue
            found: dict[str, list[int]] = {}
            for s in short:
                for t, n in s.shortfall.items():
                    found.setdefault(t, []).append(n)
            types = ", ".join(f"{t}: {min(v)}-{max(v)} in {len(v)}" for t, v in sorted(found.items()))
            out.append({"dataset": bench.name, "k": k, "samplings": len(sets), "samplings_short": len(short),
                        "types": types, "detail": {t: v for t, v in found.items()}})
    return out


def headline(results: pl.DataFrame, base: str) -> dict[str, Any]:
    """Per protocol and encoder: F1 (%) averaged over data sets and samplings at each k, and the gap to the base."""
    out: dict[str, Any] = {}
    grouped = results.group_by(["protocol", "encoder", "k"]).agg(pl.col("value").mean() * 100).sort(["protocol", "encoder", "k"])
    means = {(r["protocol"], r["encoder"], r["k"]): r["value"] for r in grouped.iter_rows(named=True)}
    for (protocol, encoder, k), value in means.items():
        key = f"{protocol} {encoder} k={k}"
        out[key] = round(value, 2)
        if encoder != base and (protocol, base, k) in means:
            out[key + " vs base"] = round(value - means[(protocol, base, k)], 2)
    return out
