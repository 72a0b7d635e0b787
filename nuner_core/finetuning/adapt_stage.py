"""``finetune.method: dual_encoder``: adapt the zero-shot tagger to the user's labels, and measure what it forgets.

Artifact layout::

    model/         the adapted tagger (text_encoder/, concept_encoder/, dual_encoder.json with the threshold
                   re-calibrated on the user's dev split, README.md naming the data): ``nuner tag --model``
    base_model/    the same adaptation of the base encoder as both encoders (when compare_base)
    results.json   every run (pair x seed): steps, dev loss, dev calibration, test entity F1; zero-shot before;
                   retention (zero-shot entity F1 on other benchmarks before and after)
    summary.md     the runs, before → after on the user's test, and the retention line
    metrics.jsonl, loss_curve.png

Each pair is adapted once per seed (runs in ``ctx.work_dir/<pair>/seed_<s>/``, resumable); the seed
with the lowest dev loss is exported. Test F1 is the tagger's, labels named ``normalise_label(type)``
as ``nuner tag --labels`` names them, at the threshold calibrated on dev.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nuner_core.finetuning.config import BenchmarkData, FinetuneConfig
from nuner_core.jsonl import read_json_objects
from nuner_core.stage_api import Report, StageContext, StageError, StageResult

if TYPE_CHECKING:
    from nuner_core.finetuning.adapt_train import Pair, PairSpec
    from nuner_core.finetuning.data import FinetuneData
    from nuner_core.iob2.conll import Sentence
    from nuner_core.tagging import ZeroShotTagger

NUNER, BASE = "nuner", "base"
PRODUCT_DIRS = {NUNER: "model", BASE: "base_model"}
RETENTION_SEED = 0  # the test subsample of each retention benchmark


def reads_dataset(config: FinetuneConfig) -> bool:
    """The pretrain dataset is read for replay sentences and sampled negative concepts."""
    return config.adapt.replay_share > 0 or config.adapt.negatives > 0


def retention_names(config: FinetuneConfig) -> tuple[str, ...]:
    """``retention_benchmarks``, else the evaluation's default benchmarks but the one trained on."""
    if config.retention_benchmarks is not None:
        return config.retention_benchmarks
    from nuner_core.evaluation.benchmarks import SHARED_BENCHMARKS

    trained = config.data.name if isinstance(config.data, BenchmarkData) else None
    return tuple(n for n in SHARED_BENCHMARKS if n != trained)


def starting_pairs(cfg: FinetuneConfig, ctx: StageContext[FinetuneConfig]) -> dict[str, tuple[str, str]]:
    """Pair name -> (kind, reference): the tagger to adapt and, beside it, the base encoder."""
    from nuner_core.dual_encoder.pretrain_artifact import MAIN_RUN, read_outputs
    from nuner_core.tagging import check_model_dir

    if cfg.encoder is None:
        if "pretrain" not in ctx.inputs:
            raise StageError("finetune.method dual_encoder adapts the pretrain artifact's tagger and none was given: run the pretrain stage "
                             "first, or set finetune.encoder to a tagger directory")  # fmt: skip
        outputs = read_outputs(ctx.inputs["pretrain"].dir)
        if MAIN_RUN not in outputs.dual_encoders:
            raise StageError(f"the pretrain artifact {outputs.key} holds no two-encoder model for {MAIN_RUN!r}")
        tagger = str(outputs.dual_encoders[MAIN_RUN])
        base: str | None = cfg.base or outputs.base_model
    else:
        tagger, base = cfg.encoder, cfg.base
    check_model_dir(tagger)  # a clear error when finetune.encoder is no tagger directory
    pairs = {NUNER: ("tagger", tagger)}
    if cfg.compare_base:
        if base is None:
            raise StageError("finetune.compare_base needs finetune.base when finetune.encoder is set")
        pairs[BASE] = ("encoder", base)
    return pairs


def replay_examples(cfg: FinetuneConfig, ctx: StageContext[FinetuneConfig]) -> list[Any]:
    from nuner_core.dual_encoder.annotated import load_annotated
    from nuner_core.finetuning.adapt_data import replay_sample

    if not reads_dataset(cfg):
        return []
    if "dataset" not in ctx.inputs:
        raise StageError("finetune.adapt replays the pretrain dataset (replay_share > 0 or negatives > 0) and no dataset artifact was given: "
                         "run the dataset stage, or set finetune.adapt.replay_share=0 and finetune.adapt.negatives=0")  # fmt: skip
    return replay_sample(load_annotated(ctx.inputs["dataset"].dir / "annotated.parquet").train, cfg.adapt.replay_pool, 0)


def user_mapping(types: list[str]) -> dict[str, str]:
    """Each type's label as ``nuner tag --labels <type>`` embeds it (``normalise_label``), the name it was trained on."""
    from nuner_core.tagging import normalise_label

    return {t: normalise_label(t) for t in types}


def recalibrate(tagger: ZeroShotTagger, data: FinetuneData) -> dict[str, Any] | None:
    """The threshold on the user's **dev split only** (every label of the data, word-level F1); None without dev."""
    from nuner_core.finetuning.adapt_data import user_examples
    from nuner_core.tagging import calibrate_examples

    if not data.dev:
        return None
    calibration = calibrate_examples(tagger, user_examples(data.dev, "dev"), data.sources.get("dev", "dev"), label_set="split", max_sentences=None)
    return {"threshold": calibration.threshold, "f1": calibration.f1, "sentences": calibration.sentences, "split": "dev"}


def entity_f1(tagger: ZeroShotTagger, sentences: list[Sentence], types: list[str], mapping: dict[str, str] | None) -> dict[str, Any]:
    from nuner_core.evaluation.zero_shot import evaluate_zero_shot

    result = evaluate_zero_shot(tagger, sentences, types, mapping=mapping)
    per_type = [{"type": s.type, "f1": s.f1, "support": s.support} for s in result.score.entity_scores]
    return {"f1": result.score.entity_micro_f1, "threshold": result.threshold, "per_type": per_type}


def retention(tagger: ZeroShotTagger, names: tuple[str, ...], test_size: int | None) -> dict[str, float]:
    """Zero-shot entity micro-F1 on each benchmark's (subsampled) test split, type names as the evaluation names them."""
    from nuner_core.evaluation.benchmarks import load_benchmark, resolve_spec

    out = {}
    for name in names:
        bench = load_benchmark(resolve_spec(name), test_size, RETENTION_SEED)
        out[name] = entity_f1(tagger, bench.test.sentences, bench.types, None)["f1"]
    return out


def run_dual_encoder(ctx: StageContext[FinetuneConfig], data: FinetuneData) -> StageResult:
    from nuner_core.finetuning.adapt_data import user_examples
    from nuner_core.finetuning.adapt_train import PairSpec, adapt_run, as_tagger
    from nuner_core.finetuning.plots import loss_curve
    from nuner_core.tagging import ZeroShotTagger, check_model_dir

    cfg = ctx.config
    pairs = starting_pairs(cfg, ctx)
    like = check_model_dir(pairs[NUNER][1])
    replay = replay_examples(cfg, ctx)
    train, dev = user_examples(data.train, "train"), user_examples(data.dev, "dev")
    labels = sorted(set(user_mapping(data.types).values()))
    mapping = user_mapping(data.types)
    specs = [PairSpec(name, ref, kind, seed) for name, (kind, ref) in pairs.items() for seed in cfg.seeds]  # type: ignore[arg-type]
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    for index, spec in enumerate(specs):
        summary, pair = adapt_run(cfg, spec, train, dev, replay, labels, _run_dir(ctx.work_dir, spec), _Progress(ctx, index, len(specs)), like)
        start = like.threshold if spec.kind == "tagger" else None
        calibration = recalibrate(as_tagger(pair, None, pair.model.text_encoder.device), data)
        tagger = as_tagger(pair, calibration["threshold"] if calibration else start, pair.model.text_encoder.device)
        test = entity_f1(tagger, data.test, data.types, mapping) if data.test else None
        runs[(spec.name, spec.seed)] = summary | {"calibration": calibration, "test": test}

    before_tagger = ZeroShotTagger.from_pretrained(pairs[NUNER][1], device=cfg.device)
    before = entity_f1(before_tagger, data.test, data.types, mapping) if data.test else None
    names = retention_names(cfg)
    kept = {"before": retention(before_tagger, names, cfg.adapt.retention_test_size)}
    selected = {name: min((runs[(name, s)] for s in cfg.seeds), key=lambda r: (r["dev_loss"] is None, r["dev_loss"] or 0.0, cfg.seeds.index(r["seed"])))
                for name in pairs}  # fmt: skip
    for name, chosen in selected.items():
        spec = PairSpec(name, pairs[name][1], pairs[name][0], chosen["seed"])  # type: ignore[arg-type]
        _, pair = adapt_run(cfg, spec, train, dev, replay, labels, _run_dir(ctx.work_dir, spec), like=like)  # finished: its weights
        threshold = chosen["calibration"]["threshold"] if chosen["calibration"] else (like.threshold if name == NUNER else None)
        tagger = as_tagger(pair, threshold, pair.model.text_encoder.device)
        if name == NUNER:
            kept["after"] = retention(tagger, names, cfg.adapt.retention_test_size)
        _save(pair, tagger, ctx.out_dir / PRODUCT_DIRS[name], _card(cfg, name, pairs[name][1], data, chosen, before, kept if name == NUNER else None))

    history = [row for spec in specs for row in read_json_objects(_run_dir(ctx.work_dir, spec) / "metrics.jsonl")]
    (ctx.out_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    loss_curve(history, ctx.out_dir / "loss_curve.png")
    aggregate = {name: _aggregate([runs[(name, s)] for s in cfg.seeds]) for name in pairs}
    results = {"method": "dual_encoder", "labels": labels, "pairs": {n: r for n, (_, r) in pairs.items()}, "zero_shot_before": before,
               "aggregate": aggregate, "retention": kept, "selected_seed": {n: s["seed"] for n, s in selected.items()},
               "runs": list(runs.values())}  # fmt: skip
    (ctx.out_dir / "results.json").write_text(json.dumps(results, indent=2))
    summary_md = summary_markdown(runs, before, aggregate, kept, data)
    (ctx.out_dir / "summary.md").write_text(summary_md)
    return StageResult(
        rows={"train_sentences": len(data.train), "dev_sentences": len(data.dev), "test_sentences": len(data.test),
              "entity_types": len(data.types), "runs": len(specs), "replay_pool": len(replay)},  # fmt: skip
        dropped=data.dropped,
        headline=_headline(before, aggregate, kept),
        extra={"method": "dual_encoder", "pairs": results["pairs"], "products": {n: PRODUCT_DIRS[n] for n in pairs}, "labels": labels,
               "data": {"sources": data.sources, "stats": data.stats}, "selected_seed": results["selected_seed"], "retention": kept,
               "runs": results["runs"]},  # fmt: skip
        reports=[Report("markdown", "finetune-summary", "Adapting the zero-shot tagger: before vs after, and retention", summary_md),
                 Report("image", "finetune-loss-curve", "Adaptation loss (train and dev)", "loss_curve.png")],  # fmt: skip
    )


class _Progress:
    def __init__(self, ctx: StageContext[FinetuneConfig], index: int, runs: int):
        self.inner, self.index, self.runs = ctx.progress, index, runs

    def update(self, done: int, total: int | None, note: str = "") -> None:
        self.inner.update(self.index * (total or 0) + done, self.runs * total if total else None, f"run {self.index + 1}/{self.runs} · {note}")


def _run_dir(work_dir: Path, spec: PairSpec) -> Path:
    return work_dir / spec.name / f"seed_{spec.seed}"


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    scores = [r["test"]["f1"] for r in runs if r["test"] is not None]
    if not scores:
        return {"f1_mean": None, "f1_std": None, "f1_per_seed": {}}
    std = statistics.stdev(scores) if len(scores) > 1 else 0.0
    return {"f1_mean": statistics.fmean(scores), "f1_std": std, "f1_per_seed": {str(r["seed"]): r["test"]["f1"] for r in runs}}


def _mean(values: dict[str, float]) -> float | None:
    return statistics.fmean(values.values()) if values else None


def _headline(before: dict[str, Any] | None, aggregate: dict[str, Any], kept: dict[str, dict[str, float]]) -> dict[str, Any]:
    head: dict[str, Any] = {"method": "dual_encoder", "test_f1": aggregate[NUNER]["f1_mean"], "test_f1_std": aggregate[NUNER]["f1_std"],
                            "zero_shot_test_f1": None if before is None else before["f1"],
                            "retention_before": _mean(kept["before"]), "retention_after": _mean(kept.get("after", {}))}  # fmt: skip
    if BASE in aggregate:
        head["base_test_f1"] = aggregate[BASE]["f1_mean"]
    return head


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def summary_markdown(runs: dict[tuple[str, int], dict[str, Any]], before: dict[str, Any] | None, aggregate: dict[str, Any],
                     kept: dict[str, dict[str, float]], data: FinetuneData) -> str:  # fmt: skip
    lines = ["| pair | seed | steps | replay/batch | dev loss | dev threshold | test entity F1 |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (name, seed), r in runs.items():
        dev_loss = "" if r["dev_loss"] is None else f"{r['dev_loss']:.4f}"
        threshold = "" if r["calibration"] is None else f"{r['calibration']['threshold']:g}"
        test = _pct(r["test"]["f1"] if r["test"] else None)
        lines.append(f"| {name} | {seed} | {r['steps']} | {r['replay_per_batch']} | {dev_loss} | {threshold} | {test} |")
    a = aggregate[NUNER]
    lines += ["", f"- user's test, entity micro-F1: zero-shot before {_pct(before['f1'] if before else None)} → adapted "
                  f"{_pct(a['f1_mean'])} ± {_pct(a['f1_std'])} (mean ± std over {len(a['f1_per_seed'])} seeds)"]  # fmt: skip
    if BASE in aggregate:
        lines.append(f"- the same adaptation of the base encoder: {_pct(aggregate[BASE]['f1_mean'])} ± {_pct(aggregate[BASE]['f1_std'])}")
    after = kept.get("after", {})
    cells = ", ".join(f"{n} {_pct(b)} → {_pct(after.get(n))}" for n, b in kept["before"].items())
    lines.append(f"- retention (zero-shot entity micro-F1 on other benchmarks, before → after): {cells}; "
                 f"mean {_pct(_mean(kept['before']))} → {_pct(_mean(after))}")  # fmt: skip
    lines += [f"- {split}: {where} ({len(getattr(data, split))} sentences)" for split, where in data.sources.items()]
    return "\n".join(lines) + "\n"


def _card(cfg: FinetuneConfig, name: str, start: str, data: FinetuneData, run: dict[str, Any], before: dict[str, Any] | None,
          kept: dict[str, dict[str, float]] | None) -> Any:  # fmt: skip
    from nuner_core.tagging import ModelCard

    cal = run["calibration"]
    evaluation = [] if run["test"] is None else [{"dataset": f"{data.sources['test']}", "protocol": "after adaptation (this model)",
                                                   "metric": "entity micro-F1", "value": round(run["test"]["f1"], 4)}]  # fmt: skip
    if before is not None and name == NUNER:
        evaluation.append({"dataset": data.sources["test"], "protocol": "zero-shot before adaptation", "metric": "entity micro-F1",
                           "value": round(before["f1"], 4)})  # fmt: skip
    for bench, value in (kept or {}).get("before", {}).items():
        evaluation.append({"dataset": bench, "protocol": "retention: zero-shot before → after", "metric": "entity micro-F1",
                           "value": f"{value:.4f} → {kept['after'][bench]:.4f}" if kept else ""})  # fmt: skip
    return ModelCard(
        name=f"NuNER zero-shot tagger adapted to {', '.join(data.types)}" + ("" if name == NUNER else " (from the base encoder)"),
        base_model=start,
        training_data="; ".join(f"{split}: {where}" for split, where in data.sources.items()),
        training={"method": "dual-encoder adaptation (the pre-training objective on the user's spans)", "seed": run["seed"],
                  "steps": f"{run['steps']} of {run['total_steps']}", "selected step": run["selected_step"],
                  "replay": f"{run['replay_per_batch']} of {cfg.batch_size} sentences per batch from the pretrain dataset",
                  "lr": cfg.lr, "frozen text layers": cfg.adapt.freeze_layers},  # fmt: skip
        calibration=None if cal is None else {"threshold": cal["threshold"], "f1": cal["f1"], "sentences": cal["sentences"], "label_set": "user's dev split"},
        evaluation=evaluation,
        example_labels=tuple(user_mapping(data.types).values())[:4],
        notes="The threshold was re-calibrated on the user's dev split only; labels are matched ignoring case, '_' and '-'.",
    )


def _save(pair: Pair, tagger: ZeroShotTagger, dest: Path, card: Any) -> None:
    """A tagger directory: both encoders with their tokenizers, dual_encoder.json (bias and threshold), the model card."""
    from nuner_core.tagging import CARD_FILE, SETTINGS_FILE, render_model_card

    parts = (("text_encoder", pair.model.text_encoder, pair.tokenizer), ("concept_encoder", pair.model.concept_encoder, pair.concept_tokenizer))
    for sub, encoder, tokenizer in parts:
        encoder.save_pretrained(dest / sub)
        tokenizer.save_pretrained(dest / sub)
    (dest / SETTINGS_FILE).write_text(json.dumps(tagger.settings.as_json(), indent=2) + "\n")
    (dest / CARD_FILE).write_text(render_model_card(card, tagger.settings, dest.name), encoding="utf-8")
