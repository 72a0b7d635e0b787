"""What a user reads: ``summary.md`` (mean ± std tables, differences to the base, paper figures) and ``f1_vs_k.png``."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from nuner_core.evaluation.benchmarks import PAPER_BENCHMARKS
from nuner_core.plotting import one_at_a_time

AVERAGE = "average"

# Paper Table 3: token macro-F1 (%) averaged over OntoNotes 5, BioNLP 2004, MIT Restaurant and
# MIT Movie, frozen encoder + linear head, 10 samplings per k.
PAPER_TABLE3 = {
    "RoBERTa-base": {1: 24.5, 4: 44.7, 16: 58.1, 64: 65.4},
    "NuNER": {1: 39.4, 4: 59.6, 16: 67.8, 64: 71.5},
}

PROTOCOL_TITLES = {
    "frozen": "frozen encoder + linear softmax probe, token-level macro-F1 over entity types (%)",
    "finetune": "fine-tuned encoder + two-layer head, entity-level micro-F1, strict IOB2 (%)",
    "zero_shot": "zero-shot two-encoder tagger from the type names, token-level macro-F1 (%)",
    "zero_shot_entity": "zero-shot two-encoder tagger from the type names, entity-level micro-F1, exact span and type (%)",
    "llm": "LLM in context, the support set as worked examples, token-level macro-F1 over entity types (%)",
    "llm_entity": "LLM in context, the support set as worked examples, entity-level micro-F1, strict IOB2 (%)",
}
ZERO_SHOT = "zero_shot"  # the frozen protocol's metric at k = 0: shown as the k = 0 column of the frozen table and plot


def protocol_rows(results: pl.DataFrame, protocol: str) -> pl.DataFrame:
    """The rows of one protocol; the frozen protocol's include the zero-shot rows as its k = 0 point."""
    rows = results.filter(pl.col("protocol") == protocol)
    if protocol == "frozen":
        zero = results.filter(pl.col("protocol") == ZERO_SHOT).with_columns(protocol=pl.lit("frozen"))
        rows = pl.concat([zero, rows]) if zero.height else rows
    return rows


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def scores_by_seed(results: pl.DataFrame, protocol: str) -> dict[tuple[str, str, int], dict[int, float]]:
    """(encoder, data set or 'average', k) -> {seed: F1 in %}; the average is taken per seed over the data sets."""
    table: dict[tuple[str, str, int], dict[int, float]] = defaultdict(dict)
    rows = protocol_rows(results, protocol)
    for row in rows.iter_rows(named=True):
        table[(row["encoder"], row["dataset"], row["k"])][row["seed"]] = 100 * row["value"]
    datasets = rows["dataset"].unique(maintain_order=True).to_list()
    for encoder in rows["encoder"].unique(maintain_order=True).to_list():
        for k in rows["k"].unique(maintain_order=True).to_list():
            per = [table.get((encoder, d, k), {}) for d in datasets]
            common = set.intersection(*(set(p) for p in per)) if per else set()
            if per and common:
                table[(encoder, AVERAGE, k)] = {s: statistics.mean(p[s] for p in per) for s in sorted(common)}
    return table


def write_summary(
    path: Path,
    results: pl.DataFrame,
    base: str,
    encoders: Sequence[dict[str, Any]],
    benchmarks: Sequence[dict[str, Any]],
    shortfalls: Sequence[dict[str, Any]],
    notes: Sequence[str] = (),
    zero_shot: Sequence[dict[str, Any]] = (),
    sections: Sequence[Sequence[str]] = (),
) -> str:
    """``summary.md``; ``sections`` are further sections (lines each) placed after the protocol tables."""
    lines = ["# Few-shot NER evaluation", ""]
    lines += [f"- {note}" for note in notes]
    lines += ["", "## Encoders", "", "| encoder | reference | origin | identity |", "| --- | --- | --- | --- |"]
    for e in encoders:
        mark = " (base)" if e["name"] == base != "base" else ""
        init = f" (random init, seed {e['init_seed']})" if e["random_init"] else ""
        lines.append(f"| {e['name']}{mark} | `{e['reference']}`{init} | {e['origin']} | `{e['identity']}` |")
    lines += ["", "## Data sets", "", "| data set | types | pool sentences | test sentences |", "| --- | --- | --- | --- |"]
    for b in benchmarks:
        test = f"{b['test_sentences']:,}"
        if b["test_sentences"] < b["test_total"]:
            test += f" of {b['test_total']:,} (seeded subsample)"
        lines.append(f"| {b['name']} | {len(b['types'])} | {b['pool_sentences']:,} | {test} |")
    protocols = results["protocol"].unique(maintain_order=True).to_list()
    for protocol in protocols:
        if protocol == ZERO_SHOT and "frozen" in protocols:
            continue  # it is the frozen table's k = 0 column
        lines += ["", *protocol_section(results, protocol, base, [b["name"] for b in benchmarks])]
    for section in sections:
        lines += ["", *section]
    if zero_shot:
        lines += ["", *zero_shot_section(zero_shot)]
    if shortfalls:
        lines += ["", "## Types that fell short of k", "",
                  "A type too rare in the pool to reach k keeps what was found; these support sets are smaller than asked "
                  "(found: entity mentions, or entity words with sampling method kw).", "",
                  "| data set | k | samplings short | type: found (min-max) |", "| --- | --- | --- | --- |"]
        for s in shortfalls:
            lines.append(f"| {s['dataset']} | {s['k']} | {s['samplings_short']} of {s['samplings']} | {s['types']} |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def zero_shot_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The fixed threshold's scores beside the best threshold on each test set (an upper bound, not a result)."""
    out = ["## Zero-shot: the fixed threshold and the test-set upper bound", "",
           "F1 (%) at the threshold fixed before any benchmark was read (source: `calibrated` on the pre-training "
           "validation split, `given` in the config, or the `default`), and, labelled as an upper bound, the best "
           "F1 over a grid of thresholds chosen on the test set itself. The gap shows how well the scores are "
           "calibrated; only the first two columns are results.", "",
           "| model | data set | threshold (source) | token macro-F1 | entity micro-F1 | upper bound: token (at) | upper bound: entity (at) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['model']} | {r['dataset']} | {r['threshold']:.3g} ({r['source']}) | {100 * r['token_macro_f1']:.1f} | "
                   f"{100 * r['entity_micro_f1']:.1f} | {100 * r['best_token_macro_f1']:.1f} ({r['best_token_threshold']:.3g}) | "
                   f"{100 * r['best_entity_micro_f1']:.1f} ({r['best_entity_threshold']:.3g}) |")
    labels = {r["dataset"]: r["labels"] for r in rows}
    out += ["", "Label names: " + "; ".join(f"{d}: " + ", ".join(f"{t} → \"{n}\"" for t, n in m.items()) for d, m in labels.items())]
    return out


def protocol_section(results: pl.DataFrame, protocol: str, base: str, datasets: Sequence[str]) -> list[str]:
    table = scores_by_seed(results, protocol)
    rows = protocol_rows(results, protocol)
    datasets = [d for d in datasets if d in set(rows["dataset"])]  # fine-tuning may run on a subset
    ks = sorted(rows["k"].unique().to_list())
    encoders = rows["encoder"].unique(maintain_order=True).to_list()
    seeds = rows["seed"].n_unique()
    header = "| data set | encoder | " + " | ".join(f"k={k}" for k in ks) + " |"
    rule = "| --- | --- | " + " | ".join("---" for _ in ks) + " |"
    paired_note = (f"; in brackets the difference to the base encoder `{base}` (same support sets, so the difference is "
              "paired)") if base in encoders else ""
    out = [f"## {protocol}: {PROTOCOL_TITLES.get(protocol, protocol)}", "",
           f"Mean ± std over {seeds} samplings per k{paired_note}.", "", header, rule]
    for dataset in [*datasets, AVERAGE]:
        for encoder in encoders:
            cells = []
            for k in ks:
                mine = table.get((encoder, dataset, k))
                if not mine:
                    cells.append("–")
                    continue
                mean, std = _mean_std(list(mine.values()))
                cell = f"{mean:.1f} ± {std:.1f}"
                reference = table.get((base, dataset, k))
                if encoder != base and reference:
                    paired = [mine[s] - reference[s] for s in mine if s in reference]
                    if paired:
                        cell += f" ({statistics.mean(paired):+.1f})"
                cells.append(cell)
            name = f"**{dataset}**" if dataset == AVERAGE else dataset
            out.append(f"| {name} | {encoder}{' (base)' if encoder == base != 'base' else ''} | " + " | ".join(cells) + " |")
    if protocol == "frozen" and any(k in PAPER_TABLE3["NuNER"] for k in ks):
        matches = tuple(sorted(datasets)) == tuple(sorted(PAPER_BENCHMARKS))
        for model, figures in PAPER_TABLE3.items():
            out.append(f"| paper Table 3 | {model} | " + " | ".join(f"{figures[k]:.1f}" if k in figures else "–" for k in ks) + " |")
        out += ["", "Paper Table 3 rows: average over OntoNotes 5, BioNLP 2004, MIT Restaurant and MIT Movie, "
                "RoBERTa-base vs NuNER (125M parameters), frozen encoder + linear head. "
                + ("Same data sets as this run." if matches else
                   "This run's data sets and encoders differ: the figures are a reference point, not a target.")]
    return out


@one_at_a_time
def plot_f1_vs_k(path: Path, results: pl.DataFrame, protocol: str, base: str, datasets: Sequence[str],
                 k_label: str = "k (examples per entity type)") -> None:
    """One panel per data set plus the average; one line per encoder (mean) with its spread (± std) shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = scores_by_seed(results, protocol)
    rows = protocol_rows(results, protocol)
    ks = sorted(rows["k"].unique().to_list())
    encoders = rows["encoder"].unique(maintain_order=True).to_list()
    panels = [d for d in datasets if d in set(rows["dataset"])] + [AVERAGE]
    columns = min(3, len(panels))
    n_rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(n_rows, columns, figsize=(4.2 * columns, 3.4 * n_rows), squeeze=False)
    for ax, dataset in zip(axes.flat, panels):
        for encoder in encoders:
            points = [(k, _mean_std(list(table[(encoder, dataset, k)].values()))) for k in ks if table.get((encoder, dataset, k))]
            if not points:
                continue
            x = [k for k, _ in points]
            mean = [m for _, (m, _) in points]
            std = [s for _, (_, s) in points]
            (line,) = ax.plot(x, mean, marker="o", linewidth=2.2 if encoder == base else 1.6,
                              label=f"{encoder} (base)" if encoder == base != "base" else encoder)
            ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=line.get_color(), alpha=0.18)
        if 0 in ks:  # the zero-shot point: linear around 0, log beyond
            ax.set_xscale("symlog", base=2, linthresh=1)
        else:
            ax.set_xscale("log", base=2)
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_title(dataset if dataset != AVERAGE else "average over data sets", fontsize=10)
        ax.set_xlabel(k_label)
        ax.set_ylabel("F1 (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    fig.suptitle(f"{protocol}: {PROTOCOL_TITLES.get(protocol, protocol)}", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


@one_at_a_time
def plot_f1_vs_threshold(path: Path, curves: Sequence[dict[str, Any]], fixed: Sequence[dict[str, Any]]) -> None:
    """Zero-shot token macro-F1 (solid) and entity micro-F1 (dashed) against the threshold, one panel per
    data set, one colour per model; a dotted vertical line at each model's fixed threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pl.DataFrame(list(curves))
    datasets = frame["dataset"].unique(maintain_order=True).to_list()
    models = frame["model"].unique(maintain_order=True).to_list()
    columns = min(3, len(datasets))
    n_rows = (len(datasets) + columns - 1) // columns
    fig, axes = plt.subplots(n_rows, columns, figsize=(4.2 * columns, 3.4 * n_rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, dataset in zip(axes.flat, datasets):
        for i, model in enumerate(models):
            part = frame.filter((pl.col("dataset") == dataset) & (pl.col("model") == model)).sort("threshold")
            if not part.height:
                continue
            colour = colours[i % len(colours)]
            x = part["threshold"].to_list()
            ax.plot(x, [100 * v for v in part["token_macro_f1"]], color=colour, label=f"{model} token")
            ax.plot(x, [100 * v for v in part["entity_micro_f1"]], color=colour, linestyle="--", label=f"{model} entity")
            for r in fixed:
                if r["dataset"] == dataset and r["model"] == model:
                    ax.axvline(r["threshold"], color=colour, linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_title(dataset, fontsize=10)
        ax.set_xlabel("threshold on p(word is the label)")
        ax.set_ylabel("F1 (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    fig.suptitle("Zero-shot F1 vs threshold on the test sets (dotted: the threshold fixed beforehand)", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _f1(cell: tuple[float, float] | None) -> str:
    return "–" if cell is None else f"{cell[0]:.1f} ± {cell[1]:.1f}"


def _per_1k(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "usd":
        return f"${value:,.4f}" if value >= 0.01 or value == 0 else f"${value:.6f}"
    return f"{value:,.1f} s" if value >= 1 else f"{value:.3f} s"


def llm_section(comparison: Sequence[dict[str, Any]], llms: Sequence[dict[str, Any]], cells: Sequence[dict[str, Any]],
                k_unit: str) -> list[str]:
    """The paper's section 6 trade-off: F1 beside cost and time per 1,000 test sentences; then each LLM's accounting."""
    out = ["## LLM in context vs the encoders: F1, cost and time per 1,000 test sentences", "",
           f"Each LLM tags every test sentence with the support set of the same sampling shown as worked examples (k = "
           f"{k_unit} per entity type; the types listed by name); the encoders' frozen probe is trained on that same "
           "support set. Mean ± std over the LLM's samplings, on the test sentences the LLM answered (the encoders are "
           "scored again on exactly those). Entity micro-F1 for an encoder is its fine-tuned score where that protocol "
           "ran (†: on its whole test set). USD per 1,000 sentences: at the configured prices, from the tokens each "
           "answer took (cached answers included: what tagging costs); the encoders run locally, no API cost. Seconds "
           "per 1,000 sentences, measured: the LLM's wall time per sentence asked, at its concurrency; the encoders' "
           "encoding on their device plus the probe's fit and predictions.", "",
           "| data set | k | competitor | token macro-F1 | entity micro-F1 | test sentences scored, all samplings | USD per 1k sentences | "
           "seconds per 1k sentences |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    several = len({c["competitor"] for c in comparison if c["kind"] == "llm"}) > 1
    for c in comparison:
        if c["kind"] == "llm":
            name = f"**{c['competitor']}** (LLM)"
            cost = _per_1k(c["usd_per_1k"], "usd") if c["usd_per_1k"] is not None else (
                f"– (no price; {c['tokens_per_sentence']:,.0f} tokens per sentence)")
        else:
            name = f"{c['competitor']} (encoder" + (f", on {c['vs']}'s sentences" if several else "") + ")"
            cost = "local"
        entity = _f1(c["entity"]) + (" †" if c.get("entity_full_test") else "")
        when = c.get("time_measured")
        seconds = _per_1k(c["s_per_1k"], "s") + (f" ({c['device']})" if c.get("device") else "") + (
            " (earlier run)" if when == "an earlier run" else "")
        scored = f"{c['scored']:,}" + (f" of {c['asked']:,}" if c["scored"] < c["asked"] else "") + (
            f" ({c['samplings']} samplings)" if c["samplings"] > 1 else "")
        out.append(f"| {c['dataset']} | {c['k']} | {name} | {_f1(c['token'])} | {entity} | {scored} | {cost} | {seconds} |")
    out += ["", "| LLM | model at endpoint | requests this run | answers from the cache | spent this run | tokens this run | "
            "not scored | stopped by |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in llms:
        run = m["run"]
        missing: dict[str, int] = {}
        for c in cells:
            if c["llm"] == m["name"]:
                for reason, n in c["not_scored"].items():
                    missing[reason] = missing.get(reason, 0) + n
        not_scored = ", ".join(f"{r}: {n:,}" for r, n in sorted(missing.items())) or "0"
        out.append(f"| {m['name']} | `{m['model']}` at `{m['endpoint']}` | {run['requests']:,} ({run['retries']:,} retries) | "
                   f"{run['cache_hits'] + run['shared_in_flight'] + run['from_other_run']:,} | ${run['cost_usd']:,.6f} | "
                   f"{run['prompt_tokens'] + run['completion_tokens']:,} | {not_scored} | {m['stopped'] or '–'} |")
    for m in llms:
        p = m["parse"]
        out += ["", f"Answers of {m['name']} (prompt `{m['prompt_version']}`): {p['answers']:,} parsed: "
                f"{p['none']:,} NONE, {p['empty']:,} empty and {p['unparsable']:,} unparsable (scored as no entity), "
                f"{p['truncated']:,} truncated; {p['lines']:,} lines, {p['bad_lines']:,} without `mention <> type`; "
                f"{p['mentions']:,} mentions placed ({p['repeated']:,} more on a second occurrence of the same words, "
                f"{p['case_insensitive']:,} found ignoring case, {p['spacing']:,} ignoring spaces; "
                f"{p['occurrences_left']:,} further occurrences not listed, left untagged); dropped: "
                f"{p['not_in_sentence']:,} not in the sentence, {p['unknown_type']:,} of an unknown type "
                f"({p['type_normalised']:,} types matched ignoring case and separators), {p['overlapping']:,} overlapping "
                f"a mention already placed, {p['extra_listings']:,} listed more often than they occur. Every answer is in "
                "`llm_answers.parquet`."]
    unscored = sum(c["test_sentences"] - c["scored"] for c in cells)
    if unscored:
        out += ["", f"**Incomplete**: {unscored:,} test sentence(s) have no answer (see 'not scored'); the scores above are "
                "on the answered ones. The artifact is marked incomplete: the next run of the stage asks for exactly "
                "these (the others come from the response cache)."]
    return out
