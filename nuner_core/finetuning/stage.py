"""Fine-tune a token classifier on the user's labelled data, from the NuNER encoder and, beside it, from its base.

Artifact layout::

    model/           the product: AutoModelForTokenClassification + tokenizer + README.md (model card)
                     + nuner_finetune.json (words and windows, for ``nuner predict``) [+ model.onnx]
    base_model/      the same fine-tuning of the base encoder, for comparison (when compare_base)
    results.json     every run (encoder x seed): steps, dev and test entity F1, overall and per type
    metrics.jsonl    training and dev rows of every run
    loss_curve.png

Each encoder is trained once per seed; the seed with the best dev F1 (the first seed when there
is no dev set) becomes its exported directory, and test scores are reported for every seed
(mean ± std). Runs live in ``ctx.work_dir/<encoder>/seed_<s>/``: rerunning a killed stage keeps
the finished runs and resumes the interrupted one from its last checkpoint.

``method: dual_encoder`` adapts the zero-shot tagger instead (``adapt_stage``: its own layout).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nuner_core.finetuning.config import BenchmarkData, FilesData, FinetuneConfig
from nuner_core.hashing import file_sha256
from nuner_core.jsonl import read_json_objects
from nuner_core.models import resolve_model
from nuner_core.paths import expand_path
from nuner_core.stage_api import Inputs, Progress, Report, StageContext, StageError, StageResult

if TYPE_CHECKING:  # torch-heavy modules, imported inside run()
    from nuner_core.finetuning.data import FinetuneData
    from nuner_core.token_classifier.train import RunSpec

CODE_VERSION = "1"
NUNER, BASE = "nuner", "base"
PRODUCT_DIRS = {NUNER: "model", BASE: "base_model"}
PARITY_SENTENCES = 64  # real sentences the ONNX export is checked on
_MODEL_FILE_SUFFIXES = {".json", ".txt", ".model", ".safetensors", ".bin"}


# ---------------------------------------------------------------- planning hooks (no torch)


def in_full_run(config: FinetuneConfig) -> bool:
    """A run of all stages fine-tunes only when labelled data is configured."""
    return config.data is not None


def upstream(config: FinetuneConfig) -> tuple[str, ...]:
    """The pretrain artifact is read only when the NuNER encoder comes from it; the dataset when a tagger adaptation replays it."""
    from nuner_core.finetuning.adapt_stage import reads_dataset

    pretrain = ("pretrain",) if config.encoder is None else ()
    return (*pretrain, "dataset") if config.method == "dual_encoder" and reads_dataset(config) else pretrain


def fingerprint(config: FinetuneConfig) -> object:
    """Identity of the configured inputs: the data files' contents and configured local encoders' files. Never raises."""
    encoders = {name: _model_identity(ref) for name, ref in ((NUNER, config.encoder), (BASE, config.base)) if ref is not None}
    return {"data": _data_fingerprint(config.data), "encoders": encoders}


def describe(config: FinetuneConfig, inputs: Inputs) -> str:
    """Task-run title, e.g. ``finetune · pretrain encoder vs base · mit_restaurant k=16 · 3 seeds · 20 epochs``."""
    start = "pretrain encoder" if config.encoder is None else config.encoder
    versus = f"{start} vs base" if config.compare_base else start
    data = config.data
    if data is None:
        what = "no data configured"
    elif isinstance(data, BenchmarkData):
        what = f"{data.name} k={data.k}"
    else:
        what = Path(data.train).name
    method = " · adapt the tagger" if config.method == "dual_encoder" else ""
    return f"finetune{method} · {versus} · {what} · {len(config.seeds)} seed(s) · {config.epochs} epochs"


def _data_fingerprint(data: FilesData | BenchmarkData | None) -> object:
    if data is None:
        return None
    if isinstance(data, BenchmarkData):
        from nuner_core.evaluation.benchmarks import resolve_spec, spec_fingerprint

        try:
            return spec_fingerprint(resolve_spec(data.name))
        except StageError:
            return f"unknown:{data.name}"
    prints: dict[str, str | None] = {}
    for split in ("train", "dev", "test"):
        configured = getattr(data, split)
        if configured is not None:
            path = Path(expand_path(configured))
            prints[split] = file_sha256(path) if path.is_file() else f"missing:{path}"
    return prints


def _model_identity(reference: str) -> str:
    """Hashes of a local model directory's files (what from_pretrained reads); a hub id as written."""
    try:
        location = Path(resolve_model(reference))
    except ValueError as exc:  # a pypi: package that is not installed: the run says so
        return f"unresolved:{reference}:{exc}"
    if not location.is_dir():
        return f"hub:{reference}"
    files = sorted(p for p in location.iterdir() if p.is_file() and p.suffix in _MODEL_FILE_SUFFIXES and p.name != "README.md")
    return json.dumps([[p.name, file_sha256(p)] for p in files])


# ---------------------------------------------------------------- run


def resolve_encoders(config: FinetuneConfig, inputs: Inputs) -> dict[str, str]:
    """Encoder name (``nuner``, ``base``) -> its reference (a directory, pypi:<package> or hub id)."""
    encoder = config.encoder
    if encoder is None:
        from nuner_core.dual_encoder.pretrain_artifact import MAIN_RUN, read_outputs

        if "pretrain" not in inputs:
            raise StageError(
                "finetune starts from the pretrain artifact's NuNER encoder (finetune.encoder is not set) and none was given: "
                "run the pretrain stage first, or set finetune.encoder (and finetune.base)"
            )
        outputs = read_outputs(inputs["pretrain"].dir)
        if MAIN_RUN not in outputs.text_encoders:
            raise StageError(f"the pretrain artifact {outputs.key} has no {MAIN_RUN!r} text encoder: {sorted(outputs.text_encoders)}")
        encoders: dict[str, str] = {NUNER: str(outputs.text_encoders[MAIN_RUN])}
        base: str | None = config.base or outputs.base_model
    else:
        encoders = {NUNER: encoder}
        base = config.base
    if config.compare_base:
        if base is None:  # the config validator requires finetune.base when finetune.encoder is set
            raise StageError("finetune.compare_base needs finetune.base when finetune.encoder is set")
        encoders[BASE] = base
    return encoders


class _RunProgress:
    """Maps run ``index`` of ``runs`` onto one progress bar."""

    def __init__(self, inner: Progress, index: int, runs: int):
        self.inner, self.index, self.runs = inner, index, runs

    def update(self, done: int, total: int | None, note: str = "") -> None:
        if not total:
            self.inner.update(done, None, note)
            return
        self.inner.update(self.index * total + done, self.runs * total, f"run {self.index + 1}/{self.runs} · {note}")


def run(ctx: StageContext[FinetuneConfig]) -> StageResult:
    # Imported here, not at the top: planning imports this module, and torch + transformers cost seconds.
    from nuner_core.finetuning.data import load_data
    from nuner_core.finetuning.plots import loss_curve
    from nuner_core.token_classifier.train import METRICS, RunSpec, train_run

    cfg = ctx.config
    if cfg.data is None:
        raise StageError(
            "finetune.data is not configured: give files (finetune.data={kind: files, train: ..., dev: ..., test: ...}) "
            "or a benchmark (finetune.data={kind: benchmark, name: mit_restaurant, k: 16})"
        )
    if cfg.method == "dual_encoder":
        from nuner_core.finetuning.adapt_stage import run_dual_encoder

        return run_dual_encoder(ctx, load_data(cfg.data, cfg.span_repair))
    references = resolve_encoders(cfg, ctx.inputs)
    locations = {name: resolve_model(ref) for name, ref in references.items()}
    data = load_data(cfg.data, cfg.span_repair)

    specs = [RunSpec(name, locations[name], seed) for name in references for seed in cfg.seeds]
    summaries: dict[tuple[str, int], dict[str, Any]] = {}
    for index, spec in enumerate(specs):
        work = _run_dir(ctx.work_dir, spec)
        summaries[(spec.name, spec.seed)] = train_run(cfg.training(), spec, data, work, _RunProgress(ctx.progress, index, len(specs)))

    history = [row for spec in specs for row in read_json_objects(_run_dir(ctx.work_dir, spec) / METRICS)]
    (ctx.out_dir / METRICS).write_text("".join(json.dumps(r) + "\n" for r in history))
    loss_curve(history, ctx.out_dir / "loss_curve.png")

    split = "test" if data.test else "dev" if data.dev else None
    selected = {name: _select(cfg, [summaries[(name, s)] for s in cfg.seeds]) for name in references}
    aggregate = {name: _aggregate([summaries[(name, s)] for s in cfg.seeds], split) for name in references}
    onnx = _export(ctx, cfg, data, references, locations, selected, aggregate, split)

    results = {"split": split, "labels": data.labels, "encoders": references, "selected_seed": {n: s["seed"] for n, s in selected.items()},
               "aggregate": aggregate, "runs": list(summaries.values())}  # fmt: skip
    (ctx.out_dir / "results.json").write_text(json.dumps(results, indent=2))
    table = _per_type_table(aggregate, data.types)
    summary_md = _summary_markdown(cfg, data, references, summaries, selected, aggregate, split, onnx)
    headline = _headline(aggregate, selected, split, onnx)
    return StageResult(
        rows={"train_sentences": len(data.train), "dev_sentences": len(data.dev), "test_sentences": len(data.test),
              "entity_types": len(data.types), "runs": len(specs)},  # fmt: skip
        dropped=data.dropped,
        headline=headline,
        extra={
            "encoders": references,
            "products": {name: PRODUCT_DIRS[name] for name in references},
            "labels": data.labels,
            "data": {"sources": data.sources, "stats": data.stats},
            "selected_seed": results["selected_seed"],
            "onnx": onnx,
            "runs": results["runs"],
        },
        reports=[
            Report("markdown", "finetune-summary", "Fine-tuning: NuNER vs base, per seed", summary_md),
            Report("table", "finetune-f1-per-type", f"Entity F1 per type on {split}: base vs NuNER (mean over seeds)", table),
            Report("image", "finetune-loss-curve", "Fine-tuning loss and dev entity F1", "loss_curve.png"),
        ],
    )


def _run_dir(work_dir: Path, spec: RunSpec) -> Path:
    return work_dir / spec.name / f"seed_{spec.seed}"


def _select(cfg: FinetuneConfig, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose weights are exported: best dev F1 (then lower dev loss, then the earlier seed); the first without dev."""
    if all(r["dev_f1"] is None for r in runs):
        return runs[0]
    return max(runs, key=lambda r: (r["dev_f1"], -(r["dev_loss"] or 0.0), -cfg.seeds.index(r["seed"])))


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _aggregate(runs: list[dict[str, Any]], split: str | None) -> dict[str, Any]:
    """Mean and sample std over seeds of the entity F1 on ``split``, overall and per type."""
    if split is None:
        return {"f1_per_seed": {}, "f1_mean": None, "f1_std": None, "per_type": {}}
    scores = {r["seed"]: (r["test"] if split == "test" else {"f1": r["dev_f1"], "per_type": []}) for r in runs}
    mean, std = _mean_std([s["f1"] for s in scores.values()])
    per_type: dict[str, dict[str, float]] = {}
    types = sorted({t["type"] for s in scores.values() for t in s["per_type"]})
    for name in types:
        rows = [next((t for t in s["per_type"] if t["type"] == name), None) for s in scores.values()]
        f1s = [r["f1"] if r else 0.0 for r in rows]
        m, sd = _mean_std(f1s)
        per_type[name] = {"f1_mean": m, "f1_std": sd, "support": max((r["support"] for r in rows if r), default=0)}
    return {"f1_per_seed": {str(k): v["f1"] for k, v in scores.items()}, "f1_mean": mean, "f1_std": std, "per_type": per_type}


def _per_type_table(aggregate: dict[str, dict[str, Any]], types: list[str]) -> list[dict[str, Any]]:
    def pct(x: float | None) -> float | None:
        return None if x is None else round(100 * x, 1)

    rows = []
    for name in ["micro (all types)", *types]:
        row: dict[str, Any] = {"type": name}
        for enc in (BASE, NUNER):
            if enc not in aggregate:
                continue
            a = aggregate[enc]
            cell = {"f1_mean": a["f1_mean"], "f1_std": a["f1_std"]} if name.startswith("micro") else a["per_type"].get(name, {})
            if name != "micro (all types)" and "support" in cell:
                row["support"] = cell["support"]
            row[f"{enc}_f1"] = pct(cell.get("f1_mean"))
            row[f"{enc}_std"] = pct(cell.get("f1_std"))
        if BASE in aggregate and row.get(f"{NUNER}_f1") is not None and row.get(f"{BASE}_f1") is not None:
            row["delta"] = round(row[f"{NUNER}_f1"] - row[f"{BASE}_f1"], 1)
        rows.append(row)
    return rows


def _headline(aggregate: dict[str, dict[str, Any]], selected: dict[str, dict[str, Any]], split: str | None, onnx: dict[str, Any] | None) -> dict[str, Any]:
    head: dict[str, Any] = {"scored_on": split, "selected_seed": selected[NUNER]["seed"], "selected_dev_f1": selected[NUNER]["dev_f1"]}
    if split is not None:
        head[f"{split}_f1"] = aggregate[NUNER]["f1_mean"]
        head[f"{split}_f1_std"] = aggregate[NUNER]["f1_std"]
        if BASE in aggregate:
            head[f"base_{split}_f1"] = aggregate[BASE]["f1_mean"]
            head[f"base_{split}_f1_std"] = aggregate[BASE]["f1_std"]
            head[f"{split}_f1_gain"] = aggregate[NUNER]["f1_mean"] - aggregate[BASE]["f1_mean"]
    if onnx is not None:
        head["onnx_max_abs_logit_diff"] = onnx["max_abs_logit_diff"]
    return head


def _export(ctx: StageContext[FinetuneConfig], cfg: FinetuneConfig, data: FinetuneData, references: dict[str, str], locations: dict[str, str],
            selected: dict[str, dict[str, Any]], aggregate: dict[str, dict[str, Any]], split: str | None) -> dict[str, Any] | None:
    """model/ (and base_model/) from each encoder's selected run, with model cards; model.onnx when asked."""
    from nuner_core.devices import pad_id
    from nuner_core.finetuning.export import export_onnx, model_card, save_model_dir
    from nuner_core.text.words import SEGMENTATION
    from nuner_core.token_classifier.model import encode_windows
    from nuner_core.token_classifier.train import RunSpec, load_selected
    from nuner_core.tokenizer import load_tokenizer

    onnx = None
    for name, reference in references.items():
        chosen = selected[name]
        spec = RunSpec(name, locations[name], chosen["seed"])
        model = load_selected(spec, data.labels, _run_dir(ctx.work_dir, spec), chosen, cfg.training())
        tokenizer = load_tokenizer(locations[name], pre_split_words=True)
        settings = {"segmentation": SEGMENTATION, "max_length": cfg.max_length, "stride": cfg.stride, "labels": data.labels,
                    "label_alignment": "first sub-token of each word", "encoder": reference, "seed": chosen["seed"],
                    "selected_step": chosen["selected_step"]}  # fmt: skip
        card = model_card(
            title=("NuNER" if name == NUNER else "Base") + f" token classifier ({', '.join(data.types)})",
            encoder=reference,
            labels=data.labels,
            data=data.sources,
            training=_training_facts(cfg, chosen),
            scores=_card_scores(name, references, aggregate, chosen, split),
        )
        out = save_model_dir(model, tokenizer, ctx.out_dir / PRODUCT_DIRS[name], settings, card)
        if name == NUNER and cfg.export_onnx:
            sentences = (data.test or data.dev or data.train)[:PARITY_SENTENCES]
            windows = encode_windows(tokenizer, [s.tokens for s in sentences], cfg.max_length, cfg.stride)
            onnx = export_onnx(model, out, windows, pad_id(tokenizer), cfg.onnx_tolerance) | {"sentences": len(sentences)}
    return onnx


def _training_facts(cfg: FinetuneConfig, run: dict[str, Any]) -> dict[str, Any]:
    return {
        "seed": run["seed"],
        "steps": f"{run['steps']} of {run['total_steps']} ({run['epochs_run']:.1f} epochs" + (", stopped early)" if run["stopped_early"] else ")"),
        "selected weights": f"step {run['selected_step']}" + (" (best dev entity F1)" if run["dev_f1"] is not None else " (last; no dev set)"),
        "optimiser": f"AdamW, lr {cfg.lr} (encoder" + (f", x{cfg.layer_decay} per layer down" if cfg.layer_decay != 1 else "")
                     + f") / {cfg.head_lr} (head), weight decay {cfg.weight_decay}, "
                     f"linear warm-up {cfg.warmup_ratio:.0%} then linear decay, batch {cfg.batch_size}"
                     + (f", top {cfg.reinit_top_layers} encoder layer(s) re-initialised" if cfg.reinit_top_layers else ""),
        "windows": f"{cfg.max_length} sub-tokens, {cfg.stride} shared between consecutive windows",
    }  # fmt: skip


def _card_scores(name: str, references: dict[str, str], aggregate: dict[str, Any], run: dict[str, Any], split: str | None) -> dict[str, Any]:
    if split is None:
        return {"lines": ["no dev or test data: not scored"], "per_type": []}
    own = run["test"]["f1"] if split == "test" else run["dev_f1"]
    mine = aggregate[name]
    lines = [f"{split} entity micro-F1 of this model (seed {run['seed']}): {100 * own:.1f}",
             f"over {len(mine['f1_per_seed'])} seed(s): {100 * mine['f1_mean']:.1f} ± {100 * mine['f1_std']:.1f}"]  # fmt: skip
    other = BASE if name == NUNER else NUNER
    if other in aggregate:
        o = aggregate[other]
        lines.append(f"the same fine-tuning from `{references[other]}` ({other}): {100 * o['f1_mean']:.1f} ± {100 * o['f1_std']:.1f}")
    return {"lines": lines, "per_type": run["test"]["per_type"] if split == "test" else []}


def _summary_markdown(cfg: FinetuneConfig, data: FinetuneData, references: dict[str, str], summaries: dict[tuple[str, int], dict[str, Any]],
                      selected: dict[str, dict[str, Any]], aggregate: dict[str, dict[str, Any]], split: str | None,
                      onnx: dict[str, Any] | None) -> str:
    lines = ["| encoder | reference | seed | steps | stopped early | dev F1 | " + (f"{split} F1 |" if split == "test" else ""),
             "| --- | --- | ---: | ---: | --- | ---: |" + (" ---: |" if split == "test" else "")]  # fmt: skip
    for (name, seed), s in summaries.items():
        dev = "" if s["dev_f1"] is None else f"{100 * s['dev_f1']:.1f}"
        mark = " (exported)" if selected[name]["seed"] == seed else ""
        row = f"| {name} | `{references[name]}` | {seed}{mark} | {s['steps']} | {s['stopped_early']} | {dev} |"
        if split == "test":
            row += f" {100 * s['test']['f1']:.1f} |"
        lines.append(row)
    if split is not None:
        lines.append("")
        for name, a in aggregate.items():
            spread = f"{100 * a['f1_mean']:.1f} ± {100 * a['f1_std']:.1f}"
            lines.append(f"- {name}: {split} entity micro-F1 {spread} (mean ± std over {len(a['f1_per_seed'])} seeds)")
    lines.append("")
    lines += [f"- {split_name}: {where} ({len(getattr(data, split_name))} sentences)" for split_name, where in data.sources.items()]
    if data.dropped:
        lines.append("- dropped: " + ", ".join(f"{reason} {n}" for reason, n in sorted(data.dropped.items())))
    if onnx is not None:
        lines.append(f"- ONNX: model/{onnx['file']}, max |logit difference| vs PyTorch {onnx['max_abs_logit_diff']:.2e} on {onnx['sentences']} sentences")
    return "\n".join(lines) + "\n"
