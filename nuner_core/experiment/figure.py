"""The experiment's figure: F1 (or the gain over the base) against the swept key, per benchmark and
their average, with the base as a dashed reference; one panel per combination of the other keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from nuner_core.experiment.collate import AVERAGE, Scores
from nuner_core.experiment.spec import Experiment, Point, format_value
from nuner_core.plotting import one_at_a_time


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


@one_at_a_time
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
            drawn = sorted(((x, scores.cells[(p.index, name)]) for x, p in zip(xs_all, points) if (p.index, name) in scores.cells), key=lambda xc: xc[0])
            if not drawn:
                continue
            xs = [x for x, _ in drawn]
            ys = [c.gain_mean if gain else c.mean for _, c in drawn]
            es = [c.gain_std if gain else c.std for _, c in drawn]
            width = 2.4 if name == AVERAGE else 1.3
            ax.errorbar(xs, ys, yerr=es, color=colours[name], lw=width, marker="o", ms=4, capsize=3, label=name)
            bases = [c.base_mean for _, c in drawn if c.base_mean is not None]
            if not gain and len(bases) == len(drawn):  # every point has its base: its dashed line
                ax.plot(xs, bases, color=colours[name], lw=width * 0.7, ls="--", alpha=0.8)
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
