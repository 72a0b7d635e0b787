"""``report.stage: finetune``: each point's finetune artifact as rows of the experiment's table, and its summary.

A point's finetune artifact (``results.json``) gives, per encoder and seed, the entity micro-F1 on
the user's test split (on dev when there is no test split) — ``protocol`` is the method
(``token_classifier`` or ``dual_encoder``), the base beside NuNER (``is_base``) when
``compare_base``. An adaptation (``dual_encoder``) adds its zero-shot F1 before adapting
(``protocol`` ``zero_shot``, no seed: nothing was drawn) and its retention, zero-shot F1 on the
other benchmarks before and after (``retention_before`` / ``retention_after``, ``dataset`` the
other benchmark; after: the exported seed's tagger).

The rows have the evaluate table's columns, so one ``results.parquet`` layout serves both stages.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from nuner_core.experiment.spec import Experiment

METRIC = "entity_micro_f1"
SCHEMA = {
    "encoder": pl.String, "encoder_ref": pl.String, "is_base": pl.Boolean, "dataset": pl.String, "protocol": pl.String,
    "k": pl.Int64, "seed": pl.Int64, "metric": pl.String, "value": pl.Float64, "support_sentences": pl.Int64,
    "test_sentences": pl.Int64,
}  # fmt: skip


def finetune_rows(artifact: Path) -> pl.DataFrame:
    """The finetune artifact's scores in the evaluate table's columns (values as fractions, like evaluate's)."""
    results = json.loads((artifact / "results.json").read_text())
    manifest = json.loads((artifact / "manifest.json").read_text())
    data = (manifest.get("config") or {}).get("data") or {}
    counts = manifest.get("rows") or {}
    trained = data.get("name") or Path(str(data.get("train", "train"))).name  # a benchmark's name, else the training file's
    common = {"dataset": trained, "k": data.get("k"), "metric": METRIC,
              "support_sentences": counts.get("train_sentences"), "test_sentences": counts.get("test_sentences")}  # fmt: skip
    method = results.get("method", "token_classifier")
    refs: dict[str, str] = results["pairs"] if method == "dual_encoder" else results["encoders"]
    rows = []
    for run in results["runs"]:
        score = _score(run, results.get("split", "test"))
        if score is not None:
            name = run["name"]
            rows.append(common | {"encoder": name, "encoder_ref": refs[name], "is_base": name == "base", "protocol": method,
                                  "seed": run["seed"], "value": score})  # fmt: skip
    if method == "dual_encoder":
        nuner = {"encoder": "nuner", "encoder_ref": refs["nuner"], "is_base": False}
        if results.get("zero_shot_before") is not None:
            rows.append(common | nuner | {"protocol": "zero_shot", "seed": None, "value": results["zero_shot_before"]["f1"]})
        selected = results.get("selected_seed", {}).get("nuner")
        for when, seed in (("before", None), ("after", selected)):
            for bench, value in results.get("retention", {}).get(when, {}).items():
                rows.append(common | nuner | {"dataset": bench, "k": None, "protocol": f"retention_{when}", "seed": seed, "value": value,
                                              "support_sentences": None, "test_sentences": None})  # fmt: skip
    return pl.DataFrame(rows, schema=SCHEMA)


def _score(run: dict[str, Any], split: str | None) -> float | None:
    """A run's entity F1 on test (a token classifier without test: on dev; an adaptation: its test F1 only)."""
    test = run.get("test")
    if isinstance(test, dict) and test.get("f1") is not None:
        return float(test["f1"])
    return run.get("dev_f1") if split == "dev" else None


# ---------------------------------------------------------------- summary.md


def _pm(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.1f} ± {std:.1f}"


def _seeds(rows: pl.DataFrame) -> str:
    return " / ".join(f"{v:.1f}" for v in rows.sort("seed")["value"].to_list()) or "–"


def _pct(rows: pl.DataFrame) -> list[float]:
    return [100 * v for v in rows["value"].to_list()]


def write_finetune_summary(path: Path, experiment: Experiment, outcomes: Sequence[Any], table: pl.DataFrame) -> tuple[str, dict[str, Any]]:
    """summary.md of a finetune experiment (a row per point: NuNER and base test F1 over seeds, zero-shot, retention); the headline."""
    spec = experiment.spec
    ok = [o for o in outcomes if o.status != "failed"]
    failed = [o for o in outcomes if o.status == "failed"]
    fixed = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in spec.overrides.items()) or "none"
    lines = [f"# Experiment: {spec.name}", ""] + ([spec.description.strip(), ""] if spec.description else [])
    lines += [
        f"- Base profile `{spec.profile}`; fixed overrides: {fixed}.",
        f"- Swept ({spec.mode}): {', '.join(f'`{k}`' for k in spec.sweep)}; {len(outcomes)} points; reported: the finetune stage.",
        f"- Points: {len(ok)} with results ({sum(o.status == 'built' for o in ok)} run now, "
        f"{sum(o.status == 'reused' for o in ok)} found in the store), {len(failed)} failed.",
        "",
        "## Entity micro-F1 (%) on the user's test split: mean ± std over seeds (per seed)",
        "",
        "| point | label | data | method | NuNER | per seed | base | per seed | NuNER − base | zero-shot before | retention before → after (mean) "
        "| stage wall |",
        "|" + " --- |" * 12,
    ]
    headline: dict[str, Any] = {}
    retention_lines: list[str] = []
    for o in outcomes:
        mine = table.filter(pl.col("point") == o.point.index) if table.height else table
        if o.status == "failed" or mine.height == 0 or o.artifact_dir is None:
            lines.append(f"| {o.point.index} | {o.point.label} |" + " – |" * 10)
            continue
        wall = json.loads((Path(o.artifact_dir) / "manifest.json").read_text()).get("timings", {}).get("wall_s")
        time_s = "–" if wall is None else f"{wall / 60:.1f} min"
        main = mine.filter(pl.col("protocol").is_in(["token_classifier", "dual_encoder"]))
        nuner, base = main.filter(~pl.col("is_base")), main.filter(pl.col("is_base"))
        data = "–" if not main.height else main["dataset"][0] + ("" if main["k"][0] is None else f" k={main['k'][0]}")
        gain = "–"
        if nuner.height and base.height:
            gain = f"{statistics.fmean(_pct(nuner)) - statistics.fmean(_pct(base)):+.1f}"
        zero = mine.filter(pl.col("protocol") == "zero_shot")
        before, after = (mine.filter(pl.col("protocol") == f"retention_{w}") for w in ("before", "after"))
        kept = "–"
        if before.height and after.height:
            kept = f"{statistics.fmean(_pct(before)):.1f} → {statistics.fmean(_pct(after)):.1f}"
            cells = ", ".join(f"{b} {100 * v:.1f} → {100 * a:.1f}" for b, v, a in zip(before["dataset"], before["value"], _align(before, after)))
            retention_lines.append(f"- point {o.point.index} ({o.point.label}): {cells}")
        lines.append(
            f"| {o.point.index} | {o.point.label} | {data} | {main['protocol'][0] if main.height else '–'} | **{_pm(_pct(nuner))}** | "
            f"{_seeds(nuner.with_columns(pl.col('value') * 100))} | {_pm(_pct(base))} | {_seeds(base.with_columns(pl.col('value') * 100))} | "
            f"{gain} | {f'{_pct(zero)[0]:.1f}' if zero.height else '–'} | {kept} | {time_s} |"
        )
        if nuner.height:
            headline[f"{o.point.label} F1"] = round(statistics.fmean(_pct(nuner)), 2)
    if retention_lines:
        lines += ["", "## Retention: zero-shot entity micro-F1 (%) on the other benchmarks, before → after adapting", "", *retention_lines]
    if failed:
        lines += ["", "## Failed points", "", "| point | values | why |", "| --- | --- | --- |"]
        lines += [f"| {o.point.index} | {o.point.label} | {o.message.strip().splitlines()[0] if o.message else 'unknown'} |" for o in failed]
        lines += ["", "Rerun the experiment to finish them: points with results are not run again."]
    lines += ["", "The stage wall is the finetune stage's own (all its seeds and encoders; retention scoring included).", ""]
    lines += ["## Points", "", "| point | values | status | time | finetune |", "| --- | --- | --- | --- | --- |"]
    for o in outcomes:
        seconds = f"{o.seconds:.0f} s" if o.status == "built" else ""
        lines.append(f"| {o.point.index} | {o.point.label} | {o.status} | {seconds} | `{o.keys.get('finetune', '–')}` |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text, headline


def _align(before: pl.DataFrame, after: pl.DataFrame) -> list[float]:
    """The after values in the order of the before rows' benchmarks."""
    by_bench = dict(zip(after["dataset"].to_list(), after["value"].to_list()))
    return [by_bench.get(b, float("nan")) for b in before["dataset"].to_list()]
