"""summary.md: the reported scores of every point as a table, their spread, the failed points.

The reported protocol, k, benchmarks and encoder come from the experiment file's ``report``;
each point's base encoder (``is_base``) is its reference, paired by sampling.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Sequence

from nuner_core.experiment.collate import AVERAGE, PointOutcome, Scores
from nuner_core.experiment.spec import Experiment, format_value


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
