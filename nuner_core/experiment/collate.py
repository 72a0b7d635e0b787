"""Collation: every point's evaluate results into one table, its summary and its figure.

``results.parquet`` has one row per point × encoder × benchmark × k × sampling (all
protocols and ks the points evaluated, not only the reported ones), with the point's
swept values as columns named by their dotted keys. The summary and the figure use the
reported protocol, k, benchmarks and encoder; the base (``is_base``) is the reference.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import polars as pl

from nuner_core.experiment.spec import Experiment, Point, format_value

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
    status: Status  # built: its pipeline ran here; reused: its evaluate artifact existed; failed
    keys: dict[str, str] = field(default_factory=dict)  # stage -> planned artifact key
    evaluate_dir: str | None = None  # the evaluate artifact (None when failed)
    message: str = ""  # why it failed
    seconds: float = 0.0  # wall time of its pipeline run here
    flow_run: str | None = None  # the Prefect flow run (or deployment run) of the point, when it ran

    def as_dict(self) -> dict[str, Any]:
        return {
            "point": self.point.index, "label": self.point.label, "values": self.point.values,
            "overrides": self.point.overrides, "status": self.status, "keys": self.keys,
            "evaluate_dir": self.evaluate_dir, "message": self.message, "seconds": round(self.seconds, 1),
            "flow_run": self.flow_run,
        }  # fmt: skip


# ---------------------------------------------------------------- the table


def collate(experiment: Experiment, outcomes: Sequence[PointOutcome]) -> pl.DataFrame:
    """The rows of every point with an evaluate artifact, tagged with the point and its swept values."""
    frames = []
    for outcome in outcomes:
        if outcome.evaluate_dir is None:
            continue
        rows = pl.read_parquet(Path(outcome.evaluate_dir) / "results.parquet").select(KEPT_COLUMNS)
        tags: list[pl.Expr] = [pl.lit(outcome.point.index, pl.Int64).alias("point"), pl.lit(outcome.point.label).alias("label")]
        tags.append(pl.lit(json.dumps(outcome.point.values, sort_keys=True)).alias("values"))
        tags += [pl.lit(outcome.keys.get(s)).cast(pl.String).alias(f"{s}_key") for s in ("pretrain", "evaluate")]
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


# ---------------------------------------------------------------- summary.md


def _pm(mean: float | None, std: float) -> str:
    return "–" if mean is None else f"{mean:.1f} ± {std:.1f}"


def _signed(mean: float | None, std: float) -> str:
    return "–" if mean is None else f"{mean:+.1f} ± {std:.1f}"


def write_summary(path: Path, experiment: Experiment, outcomes: Sequence[PointOutcome], scores: Scores, figure: str | None) -> str:
    spec = experiment.spec
    report = spec.report
    ok = [o for o in outcomes if o.status != "failed"]
    failed = [o for o in outcomes if o.status == "failed"]
    lines = [f"# Experiment: {spec.name}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    swept = "; ".join(f"`{k}` ∈ {{{', '.join(format_value(v) for v in vals)}}}" for k, vals in spec.sweep.items())
    fixed = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in spec.overrides.items()) or "none"
    tests = ", ".join(f"{b}: {n:,}" for b, n in scores.test_sentences.items())
    lines += [
        f"- Base profile `{spec.profile}`; fixed overrides: {fixed}.",
        f"- Swept ({spec.mode}): {swept}; {len(outcomes)} points.",
        f"- Reported: protocol `{report.protocol}`, k = {report.k}, encoder `{report.encoder}` against its base "
        f"(`is_base`), {scores.samplings} samplings per point (the same support sets for every point and encoder); "
        f"benchmarks: {', '.join(scores.benchmarks) or 'none'}" + (f" (test sentences: {tests})" if tests else "") + ".",
        f"- Points: {len(ok)} with results ({sum(o.status == 'built' for o in ok)} run now, "
        f"{sum(o.status == 'reused' for o in ok)} found in the store), {len(failed)} failed.",
        "",
    ]
    metric = "token macro-F1 (%)" if report.protocol == "frozen" else "entity micro-F1 (%)"
    lines += [f"## {metric} at k = {report.k}: mean ± std over samplings", ""]
    columns = ["label"] if spec.labels else [k.rsplit(".", 1)[-1] for k in spec.sweep]
    header = ["point", *columns, *scores.benchmarks, AVERAGE, "base (average)", "gain vs base"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for outcome in outcomes:
        p = outcome.point
        cells = [str(p.index), *([p.label] if spec.labels else [format_value(p.values[k]) for k in spec.sweep])]
        avg = scores.cells.get((p.index, AVERAGE))
        if avg is None:
            why = "failed" if outcome.status == "failed" else scores.problems.get(p.index, "no scores")
            cells += ["–"] * len(scores.benchmarks) + [f"({why})", "–", "–"]
        else:
            cells += [_pm(scores.cells[(p.index, b)].mean, scores.cells[(p.index, b)].std) for b in scores.benchmarks]
            cells += [f"**{_pm(avg.mean, avg.std)}**", _pm(avg.base_mean, avg.base_std), _signed(avg.gain_mean, avg.gain_std)]
        lines.append("| " + " | ".join(cells) + " |")
    bases = {scores.base_names.get(o.point.index) for o in ok} - {None}
    first = next((o for o in ok if (o.point.index, AVERAGE) in scores.cells), None)
    if first is not None and len(bases) == 1:
        row = ["base", *([""] * len(columns))]
        for b in scores.benchmarks:
            c = scores.cells[(first.point.index, b)]
            row.append(_pm(c.base_mean, c.base_std))
        c = scores.cells[(first.point.index, AVERAGE)]
        row += [_pm(c.base_mean, c.base_std), "", ""]
        lines.append("| " + " | ".join(row) + " |")
        lines += ["", f"The base row is `{bases.pop()}`, not pre-trained, on the same support sets (identical for every point)."]
    lines += _spread(outcomes, scores)
    if failed:
        lines += ["", "## Failed points", "", "| point | values | why |", "| --- | --- | --- |"]
        for o in failed:
            lines.append(f"| {o.point.index} | {o.point.label} | {o.message.strip().splitlines()[0] if o.message else 'unknown'} |")
        lines += ["", "Rerun the experiment to finish them: points with results are not run again."]
    lines += ["", "## Points", "", "| point | values | status | time | pretrain | evaluate |", "| --- | --- | --- | --- | --- | --- |"]
    for o in outcomes:
        seconds = f"{o.seconds:.0f} s" if o.status == "built" else ""
        lines.append(
            f"| {o.point.index} | {o.point.label} | {o.status} | {seconds} | `{o.keys.get('pretrain', '–')}` | `{o.keys.get('evaluate', '–')}` |"
        )
    if figure:
        lines += ["", f"![{spec.name}]({figure})"]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def _spread(outcomes: Sequence[PointOutcome], scores: Scores) -> list[str]:
    avgs = [(o.point, scores.cells[(o.point.index, AVERAGE)]) for o in outcomes if (o.point.index, AVERAGE) in scores.cells]
    if not avgs:
        return []
    means = [c.mean for _, c in avgs]
    stds = [c.std for _, c in avgs]
    lo = min(avgs, key=lambda pc: pc[1].mean)
    hi = max(avgs, key=lambda pc: pc[1].mean)
    out = [
        "",
        "## Spread",
        "",
        f"- Across points, the average F1 ranges from {lo[1].mean:.1f} ({lo[0].label}) to {hi[1].mean:.1f} "
        f"({hi[0].label}): {max(means) - min(means):.1f} points.",
        f"- Within a point, the standard deviation over samplings of the average is {min(stds):.1f} to {max(stds):.1f} "
        f"(mean {statistics.mean(stds):.1f}); a difference between two points below about twice that is within sampling noise.",
    ]
    gains = [c.gain_mean for _, c in avgs if c.gain_mean is not None]
    if gains:
        out.append(f"- Gain over the base (paired by sampling): {min(gains):+.1f} to {max(gains):+.1f} points.")
    return out


# ---------------------------------------------------------------- the figure


def x_positions(values: Sequence[Any], log_x: bool) -> tuple[list[float], list[str], bool]:
    """Positions and tick labels of the swept values; numeric values at their value, null ("all") after
    the largest; non-numeric values as categories. Returns (positions, labels, numeric)."""
    present = [v for v in values if v is not None]
    numeric = bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
    labels = [format_value(v) for v in values]
    if not numeric or (log_x and any(v <= 0 for v in present)):
        return [float(i) for i in range(len(values))], labels, False
    ordered = sorted(set(float(v) for v in present))
    if len(ordered) >= 2:
        beyond = ordered[-1] * (ordered[-1] / ordered[-2]) if log_x else ordered[-1] + (ordered[-1] - ordered[-2])
    else:
        beyond = ordered[-1] * 4 if log_x else ordered[-1] + 1
    return [beyond if v is None else float(v) for v in values], labels, True


def plot(path: Path, experiment: Experiment, scores: Scores) -> bool:
    """x = the swept key, y = F1 (or gain) per benchmark and their average, the base as a reference.

    With more than one swept key in grid mode, one panel per combination of the other keys.
    Returns False when there is nothing to draw.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = experiment.spec
    xkey = spec.x_key
    scored = [p for p in experiment.points if (p.index, AVERAGE) in scores.cells]
    if not scored:
        return False
    others = [k for k in spec.sweep if k != xkey] if spec.mode == "grid" else []
    panels: dict[str, list[Point]] = {}
    for p in experiment.points:
        panels.setdefault(", ".join(f"{k.rsplit('.', 1)[-1]}={format_value(p.values[k])}" for k in others), []).append(p)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.6), squeeze=False)
    series = [*scores.benchmarks, AVERAGE]
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(scores.benchmarks)} | {AVERAGE: "black"}
    gain = spec.figure.y == "gain"
    for ax, (title, points) in zip(axes[0], panels.items()):
        xs_all, labels, numeric = x_positions([p.values[xkey] for p in points], spec.figure.log_x)
        if spec.labels and (spec.mode == "zip" or len(spec.sweep) == 1):
            labels = [p.label for p in points]
        for name in series:
            xs, ys, es, bs = [], [], [], []
            for x, p in zip(xs_all, points):
                cell = scores.cells.get((p.index, name))
                if cell is None:
                    continue
                xs.append(x)
                ys.append(cell.gain_mean if gain else cell.mean)
                es.append(cell.gain_std if gain else cell.std)
                bs.append(cell.base_mean)
            if not xs:
                continue
            order = sorted(range(len(xs)), key=lambda i: xs[i])
            xs, ys, es, bs = ([v[i] for i in order] for v in (xs, ys, es, bs))
            width = 2.4 if name == AVERAGE else 1.3
            ax.errorbar(xs, ys, yerr=es, color=colours[name], lw=width, marker="o", ms=4, capsize=3, label=name)
            if not gain and all(b is not None for b in bs):
                ax.plot(xs, bs, color=colours[name], lw=width * 0.7, ls="--", alpha=0.8)
        if gain:
            ax.axhline(0.0, color="grey", lw=1, ls="--")
        if numeric and spec.figure.log_x:
            ax.set_xscale("log")
        ax.set_xticks(xs_all)
        ax.set_xticklabels(labels)
        ax.minorticks_off()
        ax.set_xlabel(xkey)
        ax.set_ylabel(("gain over base, " if gain else "") + ("token macro-F1 (%)" if spec.report.protocol == "frozen" else "entity micro-F1 (%)"))
        if title:  # one panel per combination of the other swept keys
            ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    if not gain:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="grey", ls="--"))
        names.append("base (not pre-trained), same colour")
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 4), fontsize=8, frameon=False)
    sup = spec.figure.title or spec.name
    fig.suptitle(f"{sup}: {spec.report.encoder} vs base, {spec.report.protocol} k={spec.report.k}, mean ± std over {scores.samplings} samplings", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
