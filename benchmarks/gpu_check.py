"""One command to check a GPU machine: pre-training speed (tokens/s, MFU), DDP, and CUDA against CPU.

    bash scripts/gpu_check.sh                        # on the GPU machine: paper shape, bf16, sized for <= 8 min on one GPU
    bash scripts/gpu_check.sh --report $OUT/gpu_report.json
    bash scripts/gpu_check.sh --dry-run              # on CPU: tiny encoders, the same code paths (the suite runs it)

Every part runs the project's own code; nothing here trains or tags by itself:

  pretrain   ``nuner_core.pretraining.train.train`` at the paper profile's shape (its batch size,
             max length, frozen layers, optimiser; RoBERTa-base text and concept encoders built
             from a config: random weights, no download) in bf16 for ``--warmup`` + ``--steps``
             steps. Timed from the training loop's own metrics rows after the warm-up; MFU =
             model FLOPs / time / the device's dense bf16 peak (``PEAK_BF16``, printed with it).
  reference  the same loop with dropout off, the global batch split into micro-batches as DDP
             splits it (one process accumulating them); its export feeds the parity checks.
  tagger     ``ZeroShotTagger`` on the device (bf16, and fp32) against the CPU (fp32) on a small
             batch: the logit of every word x label; then sentences/s on the device (bf16).
  encoding   the evaluation's ``encode_words`` (as the harness loads the encoder) on the device
             (fp32 as shipped, and under bf16 autocast) against the CPU.
  finetune   ``token_classifier.train.train_run`` for a few steps on the device (fp32 as shipped,
             and under bf16 autocast) against the CPU: the loss of every step and the test loss.
  ddp        with several GPUs: the reference run again through the project's launcher
             (``run_training``, nproc = GPUs: torchrun, NCCL), loss compared step by step.
             Dry run: 2 CPU processes on gloo.

Model FLOPs (what the objective needs, per token: the standard 6·N for N trained parameters):
text encoder 6·N(trained layers) + 2·N(frozen layers: forward only), concept encoder 6·N(all
layers); embeddings (lookups), the unused pooler, attention scores (about 3% at 128 tokens) and
the loss are left out; tokens are the real (unpadded) tokens of each encoder. The report also
gives ``mfu_6N_all_params`` (6 x every parameter x tokens, frozen layers and embeddings included):
the literal count, an overestimate.

Writes the report (``--report``, default ``gpu_report.json``) after every part, so a part that
hangs leaves the others' results; the last line printed is
``pretrain_mfu=… ddp_ok=… tag_sentences_per_s=… cuda_cpu_parity=…``. Exit status 1 when a
check fails or a part errors (the report says which and why).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

# the repository root, for running as a file without the project installed (e.g. on a bare GPU machine)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nuner_core  # noqa: E402
from nuner_core.devices import autocast  # noqa: E402
from nuner_core.devices import pad_id as pad_id_of  # noqa: E402
from nuner_core.dual_encoder.annotated import Example, load_annotated  # noqa: E402
from nuner_core.pretraining.build import find_layers  # noqa: E402
from nuner_core.pretraining.config import PretrainConfig  # noqa: E402
from nuner_core.pretraining.data import build_vocab, encode, epoch_micro_batches, make_layout  # noqa: E402
from nuner_core.pretraining.launch import run_training  # noqa: E402
from nuner_core.pretraining.targets import collate  # noqa: E402
from nuner_core.pretraining.train import METRICS  # noqa: E402
from nuner_core.stage_api import LogProgress  # noqa: E402
from nuner_core.tokenizer import load_tokenizer  # noqa: E402
from nuner_core.yamlfile import load_file  # noqa: E402

# Imported from nuner_core's stage-independent modules only: nuner_core.config and the dataset stage
# pull in polars, which GPU images (torch, transformers, pyarrow, ...) lack; pydantic is all they need added.
PAPER_PROFILE = Path(nuner_core.__file__).parent / "profiles" / "paper.yaml"
# annotated.parquet as the dataset stage writes it (nuner_core.dataset.build.ANNOTATED_SCHEMA; a test keeps them equal)
SPAN = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("concept", pa.string())])
ANNOTATED_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("split", pa.string()), ("spans", pa.list_(SPAN))])

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, matched in order against
# torch.cuda.get_device_name() (SXM H100s call themselves "H100 80GB HBM3"). --peak-flops overrides.
PEAK_BF16: list[tuple[str, float]] = [
    (r"H100.*PCIe", 756e12),
    (r"H100.*NVL", 835e12),
    (r"H100", 989e12),
    (r"H200.*NVL", 835e12),
    (r"H200", 989e12),  # GH200 too
    (r"A100", 312e12),
    (r"L40S", 362e12),
    (r"\bL4\b", 121e12),
    (r"\bA10\b", 125e12),  # not the A10G (no match: mfu n/a)
]

# Parity tolerances. fp32 on both sides: only summation order differs (TF32 is off for matmuls by
# default). bf16 against fp32: 8 mantissa bits through 12 layers, about 1% on hidden states.
TOL = {
    # max |logit_device - logit_cpu| over every word x label, logit = log(p / (1 - p)): on probabilities
    # a check would be blind where they are small (dp = p(1-p) dlogit, and most pairs are far below 0.5)
    "tagger_fp32": 1e-3,
    "tagger_bf16": 0.25,  # tau * (a cosine 0.05 off), tau = 5
    "encoding_fp32": 1e-3,  # ||F_device - F_cpu|| / ||F_cpu|| over all word features
    "encoding_bf16": 5e-2,
    "finetune_fp32": 1e-3,  # max relative difference of a step's loss, and of the test loss
    "finetune_bf16": 2e-2,  # the first step's loss: a forward pass on the same weights
    # the later steps' and the test loss: Adam's first updates are close to lr * sign(g), so bf16
    # noise in small gradients moves weights differently and the loss drifts by about one step's change
    "finetune_bf16_steps": 1e-1,
}
DDP_TOL = {"bf16": 1e-2, "fp32": 1e-4}  # max relative difference of a step's loss, one process vs DDP


@dataclass(frozen=True)
class Shape:
    """What a run is sized at: the encoders and the amount of work of each part."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int  # the model's embedding rows (RoBERTa-base: 50,265)
    words: tuple[int, int]  # pre-training sentence length in words, [low, high) (each word one token; paper: 126 + 2 special = 128)
    steps: int  # timed pre-training steps
    warmup: int  # untimed steps before them
    ddp_steps: int
    tag_sentences: int
    parity_sentences: int
    finetune_steps: int


PAPER = Shape(768, 12, 12, 3072, 50265, (126, 127), steps=200, warmup=20, ddp_steps=20, tag_sentences=20000, parity_sentences=16, finetune_steps=4)
TINY = Shape(32, 2, 2, 64, 4000, (8, 30), steps=4, warmup=2, ddp_steps=3, tag_sentences=64, parity_sentences=6, finetune_steps=2)
TINY_OVERRIDES = {"batch_size": 8, "max_length": 32, "freeze_layers": 1}  # the paper profile's shape, scaled down


# ---------------------------------------------------------------- inputs: tokenizer, encoders, data


def make_tokenizer(path: Path, n_words: int, seed: int) -> list[str]:
    """A WordPiece tokenizer whose vocabulary is ``n_words`` random lower-case words (each one token); returns them."""
    from transformers import BertTokenizerFast

    rng = np.random.default_rng(seed)
    words: dict[str, None] = {}
    while len(words) < n_words:
        words["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=int(rng.integers(3, 9))))] = None
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True, model_max_length=512).save_pretrained(path)
    return list(words)


def make_encoders(root: Path, shape: Shape, tokenizer_dir: Path) -> tuple[str, str]:
    """A RoBERTa encoder of ``shape`` with random weights, saved twice: with RoBERTa's dropout (0.1) and without."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate, max_position_embeddings=514, type_vocab_size=1, pad_token_id=0,
    )  # fmt: skip  (pad id 0: the tokenizer's; RoBERTa numbers positions after it)
    model = RobertaModel(config)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    dirs = []
    for name, dropout in (("roberta-dropout", 0.1), ("roberta-no-dropout", 0.0)):
        model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = dropout
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        dirs.append(str(root / name))
    return dirs[0], dirs[1]


def write_annotated(path: Path, examples: list[Example], validation: int) -> Path:
    """The dataset stage's annotated.parquet: the first ``validation`` examples in the validation split."""
    rows = [
        {"id": ex.id, "text": ex.text, "split": "validation" if i < validation else "train",
         "spans": [{"start": s, "end": e, "concept": c} for s, e, c in ex.spans]}
        for i, ex in enumerate(examples)
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ANNOTATED_SCHEMA), path)
    return path


def synthetic_examples(words: list[str], n: int, lengths: tuple[int, int], seed: int, num_concepts: int = 2000) -> list[Example]:
    """``n`` sentences of random words (``lengths``: [low, high) words each) with Poisson(3.7) one-word spans whose
    concepts follow a heavy tail (p ~ rank^-0.8 over ``num_concepts`` names of 1-3 words): the distribution
    ``benchmarks/pretrain_bench.py`` calibrated on the shared annotations, drawn in bulk (20,000 sentences in a second)."""
    rng = np.random.default_rng(seed)
    vocab = np.asarray(words)
    names = [" ".join(vocab[rng.integers(0, len(vocab), size=int(rng.integers(1, 4)))]) for _ in range(num_concepts)]
    p = 1.0 / np.arange(1, num_concepts + 1) ** 0.8
    sizes = rng.integers(lengths[0], lengths[1], size=n)
    tokens = vocab[rng.integers(0, len(vocab), size=int(sizes.sum()))]
    n_spans = np.minimum(rng.poisson(3.7, size=n), sizes)
    concepts = rng.choice(num_concepts, size=int(n_spans.sum()), p=p / p.sum())
    out, lo, c = [], 0, 0
    for i in range(n):
        sentence = [str(t) for t in tokens[lo : lo + sizes[i]]]
        lo += sizes[i]
        starts = np.cumsum([0] + [len(t) + 1 for t in sentence[:-1]])
        spans = []
        for j in rng.choice(len(sentence), size=int(n_spans[i]), replace=False):
            spans.append((int(starts[j]), int(starts[j]) + len(sentence[j]), names[concepts[c]]))
            c += 1
        out.append(Example(str(i), " ".join(sentence), tuple(spans)))
    return out


def pretrain_data(path: Path, words: list[str], cfg: PretrainConfig, steps: int, lengths: tuple[int, int], seed: int) -> Path:
    """Exactly ``steps`` batches of training sentences (one epoch) and one batch of validation ones."""
    examples = synthetic_examples(words, cfg.batch_size * (steps + 1), lengths, seed)
    return write_annotated(path, examples, validation=cfg.batch_size)


# ---------------------------------------------------------------- pre-training: timing, tokens, FLOPs


def metrics_rows(work_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (work_dir / METRICS).read_text().splitlines() if line.strip()]


def timed_window(rows: list[dict[str, Any]], after_step: int) -> tuple[float, int]:
    """(seconds, text tokens) of the training steps after ``after_step``, from the loop's own rows.

    Each train row covers the steps since the previous one: its tokens over its tokens/s is their
    time (the loop synchronises the GPU before it writes a row, so queued work is counted).
    """
    train_rows = [r for r in rows if r["kind"] == "train"]
    seconds, tokens, previous = 0.0, 0, 0
    for row in train_rows:
        delta = row["tokens"] - previous
        previous = row["tokens"]
        if row["step"] > after_step:
            seconds += delta / row["tokens_per_s"]
            tokens += delta
    if not any(r["step"] == after_step for r in train_rows) and after_step > 0:
        raise RuntimeError(f"no metrics row at step {after_step}: log_every must divide the warm-up")
    return seconds, tokens


def step_tokens(cfg: PretrainConfig, data_path: Path) -> list[tuple[int, int]]:
    """Per optimiser step, (text tokens, concept tokens) of its micro-batches, laid out exactly as ``train`` lays them out.

    The loop counts text tokens only; the concept side is replayed here (the same load, encode,
    layout and collate calls), and the text side checked against the loop's own count.
    """
    data = load_annotated(data_path)
    tokenizer = load_tokenizer(cfg.base_model)
    vocab = build_vocab(tokenizer, [data.train, data.validation], cfg.max_concept_length)
    train_set = encode(tokenizer, data.train, vocab, cfg.max_length)
    layout = make_layout(len(train_set), cfg.batch_size, cfg.micro_batch_size, 1)  # the layout does not depend on the processes
    total = min(layout.steps_per_epoch * cfg.epochs, cfg.max_steps or math.inf)
    out, cached = [], (-1, [])
    for step in range(int(total)):
        epoch, within = divmod(step, layout.steps_per_epoch)
        if cached[0] != epoch:
            cached = (epoch, epoch_micro_batches(train_set.lengths, layout, cfg.bucket_batches, cfg.seed, epoch))
        text = concept = 0
        for idx in cached[1][within * layout.group : (within + 1) * layout.group]:
            batch = collate(train_set, idx, vocab, pad_id_of(tokenizer))
            text += batch.num_tokens
            concept += int(batch.concept_mask.sum())
        out.append((text, concept))
    return out


def flop_params(model_dir: str, frozen_layers: int) -> dict[str, int]:
    """Parameter counts for the FLOPs: the transformer layers, split at the frozen ones, and every parameter."""
    from transformers import AutoConfig, AutoModel

    with torch.device("meta"):  # shapes only: nothing allocated
        model = AutoModel.from_config(AutoConfig.from_pretrained(model_dir))
    per_layer = [sum(p.numel() for p in layer.parameters()) for layer in find_layers(model)]
    return {"layers_trained": sum(per_layer[frozen_layers:]), "layers_frozen": sum(per_layer[:frozen_layers]),
            "layers_all": sum(per_layer), "all": sum(p.numel() for p in model.parameters())}  # fmt: skip


def peak_flops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """(dense bf16 peak FLOP/s, where it comes from); None with the reason when unknown."""
    if override:
        return override, "--peak-flops"
    if device.type != "cuda":
        return None, f"device {device.type}: no bf16 peak for it (MFU is a GPU figure)"
    return peak_of(torch.cuda.get_device_name(device))


def peak_of(name: str) -> tuple[float | None, str]:
    """The first ``PEAK_BF16`` entry matching a GPU's name."""
    for pattern, peak in PEAK_BF16:
        if re.search(pattern, name):
            return peak, f"{name} (table entry {pattern!r})"
    return None, f"{name!r} is not in the peak table (benchmarks/gpu_check.py PEAK_BF16); pass --peak-flops"


def pretrain_part(args: argparse.Namespace, base: PretrainConfig, model_dir: str, data: Path, work: Path, device: torch.device) -> dict[str, Any]:
    """The paper-shape run: bf16, timed after the warm-up; tokens/s and MFU."""
    total = args.warmup + args.steps
    cfg = base.model_copy(update={"base_model": model_dir, "epochs": 1, "max_steps": total, "log_every": args.warmup,
                                  "eval_every": total, "checkpoint_every": total, "export": "last", "compile": args.compile})  # fmt: skip
    summary = run_training(cfg, data, work / "work", work / "out", None, LogProgress("gpu-check pretrain"))
    seconds, text_tokens = timed_window(metrics_rows(work / "work"), args.warmup)
    per_step = step_tokens(cfg, data)
    timed = per_step[args.warmup :]
    if sum(t for t, _ in timed) != text_tokens:
        raise RuntimeError(f"replayed text tokens {sum(t for t, _ in timed)} != the loop's {text_tokens}: the replay no longer follows train()")
    concept_tokens = sum(c for _, c in timed)
    n = flop_params(model_dir, cfg.freeze_layers)
    flops = text_tokens * (6 * n["layers_trained"] + 2 * n["layers_frozen"]) + concept_tokens * 6 * n["layers_all"]
    literal = 6 * n["all"] * (text_tokens + concept_tokens)
    peak, source = peak_flops(device, args.peak_flops)
    mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    shutil.rmtree(work, ignore_errors=True)  # checkpoints and exports of a paper-size model: gigabytes, no longer needed
    return {
        "bf16": summary["bf16"], "steps_timed": args.steps, "warmup_steps": args.warmup, "seconds": seconds,
        "batch_size": cfg.batch_size, "max_length": cfg.max_length, "frozen_layers": cfg.freeze_layers, "compile": cfg.compile,
        "text_tokens": text_tokens, "concept_tokens": concept_tokens, "tokens_per_s": text_tokens / seconds,
        "all_tokens_per_s": (text_tokens + concept_tokens) / seconds, "params": n, "model_flops": flops,
        "model_flops_per_s": flops / seconds, "peak_flops": peak, "peak_source": source,
        "mfu": None if peak is None else flops / seconds / peak, "mfu_reason": None if peak else source,
        "mfu_6N_all_params": None if peak is None else literal / seconds / peak,
        "final_train_loss": summary["final_train_loss"], "peak_memory_mb": mem,
    }  # fmt: skip


def reference_config(args: argparse.Namespace, base: PretrainConfig, model_dir: str, world: int) -> PretrainConfig:
    """Dropout off, the global batch in ``world`` micro-batches, a row per step: comparable across process counts."""
    return base.model_copy(update={"base_model": model_dir, "epochs": 1, "max_steps": args.ddp_steps, "log_every": 1,
                                   "eval_every": args.ddp_steps, "checkpoint_every": args.ddp_steps, "export": "last",
                                   "micro_batch_size": base.batch_size // world})  # fmt: skip


def ddp_world(batch_size: int, visible: int) -> int:
    """The most processes (<= ``visible``) that divide the global batch evenly."""
    return max(w for w in range(1, visible + 1) if batch_size % w == 0)


def ddp_part(cfg: PretrainConfig, data: Path, work: Path, one: dict[str, Any], world: int) -> dict[str, Any]:
    """The reference run again in ``world`` processes (the project's torchrun launcher), losses compared step by step."""
    gc.collect()
    if torch.cuda.is_available():  # this process's cached blocks on GPU 0, where rank 0 trains
        torch.cuda.empty_cache()
    summary = run_training(cfg.model_copy(update={"nproc": world}), data, work / "work", work / "out", None, LogProgress("gpu-check ddp"))
    rows = metrics_rows(work / "work")
    mine = {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}
    theirs = {r["step"]: r["loss"] for r in one["rows"] if r["kind"] == "train"}
    diffs = [abs(mine[s] - theirs[s]) / max(abs(theirs[s]), 1e-12) for s in sorted(theirs) if s in mine]
    tol = DDP_TOL["bf16" if summary["bf16"] else "fp32"]
    skip = min(2, cfg.max_steps - 1) if cfg.max_steps else 0
    seconds, tokens = timed_window(rows, skip)
    return {
        "world": world, "backend": "nccl" if summary["device"].startswith("cuda") else "gloo", "steps": len(diffs),
        "one_process_losses": [theirs[s] for s in sorted(theirs)], "ddp_losses": [mine[s] for s in sorted(mine)],
        "max_rel_diff": max(diffs) if diffs else None, "tolerance": tol, "same_steps": sorted(mine) == sorted(theirs),
        "ok": bool(diffs) and sorted(mine) == sorted(theirs) and max(diffs) <= tol,
        "tokens_per_s": tokens / seconds if seconds else None, "one_process_tokens_per_s": one["tokens_per_s"],
        "speedup": tokens / seconds / one["tokens_per_s"] if seconds and one["tokens_per_s"] else None,
    }  # fmt: skip


def reference_part(cfg: PretrainConfig, data: Path, work: Path) -> dict[str, Any]:
    summary = run_training(cfg, data, work / "work", work / "out", None, LogProgress("gpu-check reference"))
    rows = metrics_rows(work / "work")
    skip = min(2, cfg.max_steps - 1) if cfg.max_steps else 0
    seconds, tokens = timed_window(rows, skip)
    shutil.rmtree(work / "work" / "checkpoints", ignore_errors=True)  # the export in out/ is what the parity parts read
    return {"out": str(work / "out"), "rows": rows, "bf16": summary["bf16"], "grad_accum": summary["grad_accum"],
            "tokens_per_s": tokens / seconds if seconds else None}  # fmt: skip


# ---------------------------------------------------------------- CUDA against CPU


def check(name: str, measured: float | None, **extra: Any) -> dict[str, Any]:
    """One comparison against its tolerance (``TOL``); None: nothing comparable (fails)."""
    return {"measured": measured, "tolerance": TOL[name], "ok": measured is not None and measured <= TOL[name], **extra}


def tagger_part(model_dir: Path, device: torch.device, texts: list[str], parity: int, labels: list[str]) -> dict[str, Any]:
    """Word x label probabilities on the device (bf16, fp32) against the CPU (fp32); then throughput (bf16)."""
    from nuner_core.tagging import ZeroShotTagger

    def logits(probs: list[np.ndarray]) -> np.ndarray:
        p = np.clip(np.concatenate([x.ravel() for x in probs]).astype(np.float64), 1e-12, 1 - 1e-12)
        return np.log(p) - np.log1p(-p)

    words = [t.split() for t in texts[:parity]]
    cpu_probs = ZeroShotTagger.from_pretrained(model_dir, device="cpu", precision="fp32").predict_words(words, labels)
    cpu = logits(cpu_probs)
    out: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        tagger = ZeroShotTagger.from_pretrained(model_dir, device=str(device), precision=precision)
        probs = tagger.predict_words(words, labels)
        diff = np.abs(logits(probs) - cpu)
        p_diff = max(float(np.abs(a - b).max()) for a, b in zip(probs, cpu_probs))
        out[f"tagger_{precision}"] = check(f"tagger_{precision}", float(diff.max()), mean=float(diff.mean()), values=int(diff.size),
                                           max_prob_diff=p_diff, cpu_logit_range=[float(cpu.min()), float(cpu.max())])  # fmt: skip
    tagger.predict(texts[:64], labels)  # warm-up (bf16): kernels, allocator
    started = time.perf_counter()
    tagged = tagger.predict(texts, labels)
    seconds = time.perf_counter() - started
    speed = {"sentences": len(texts), "words": sum(len(t.split()) for t in texts), "labels": len(labels), "seconds": seconds,
             "sentences_per_s": len(texts) / seconds, "entities": sum(len(e) for e in tagged), "precision": "bf16"}  # fmt: skip
    return {"checks": out, "speed": speed}


def encoding_part(model_dir: Path, device: torch.device, sentences: list[list[str]], max_length: int) -> dict[str, Any]:
    """The evaluation's word features on the device (fp32 as shipped, bf16 autocast) against the CPU."""
    from nuner_core.evaluation.encoders import EncoderRef, load_encoder
    from nuner_core.evaluation.features import encode_words

    ref = EncoderRef("nuner", str(model_dir / "text_encoder"), "gpu-check")
    model, tokenizer = load_encoder(ref, "cpu")
    want = np.concatenate(encode_words(model, tokenizer, sentences, (-1,), max_length))
    model, tokenizer = load_encoder(ref, str(device))
    out = {}
    for precision in ("fp32", "bf16"):
        with autocast(device, precision == "bf16"):
            got = np.concatenate(encode_words(model, tokenizer, sentences, (-1,), max_length))
        rel = float(np.linalg.norm(got - want) / max(float(np.linalg.norm(want)), 1e-12))
        out[f"encoding_{precision}"] = check(f"encoding_{precision}", rel, max_abs=float(np.abs(got - want).max()), words=len(want))
    return {"checks": out}


def finetune_data(words: list[str], n: int, seed: int) -> list[Any]:
    """``n`` IOB2 sentences of random words, two entity types."""
    from nuner_core.iob2.conll import Sentence

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        tokens = [str(w) for w in rng.choice(words, size=int(rng.integers(8, 20)))]
        tags, previous = [], "O"
        for _ in tokens:
            r = rng.random()
            tag = "O" if r < 0.6 else f"B-{rng.choice(['alpha', 'beta'])}" if r < 0.85 or previous == "O" else f"I-{previous[2:]}"
            tags.append(tag)
            previous = tag
        out.append(Sentence(tuple(tokens), tuple(tags)))
    return out


def finetune_part(model_dir: Path, device: torch.device, words: list[str], steps: int, max_length: int, work: Path, threads: int | None) -> dict[str, Any]:
    """A few fine-tuning steps on the device (fp32 as shipped, bf16 autocast) against the CPU: every step's loss, the test loss."""
    from nuner_core.token_classifier.config import TrainingConfig
    from nuner_core.token_classifier.splits import LabelledSplits
    from nuner_core.token_classifier.train import RunSpec, train_run

    batch = 4
    splits = LabelledSplits(train=finetune_data(words, steps * batch, 1), dev=[], test=finetune_data(words, 8, 2), types=["alpha", "beta"])
    spec = RunSpec("nuner", str(model_dir / "text_encoder"), seed=0)

    def run(name: str, on: torch.device, bf16: bool) -> tuple[list[float], float]:
        cfg = TrainingConfig(epochs=1, batch_size=batch, patience=None, dropout=0.0, max_length=max_length, stride=max_length // 4 - 2,
                             device=str(on), checkpoints=False, log_every=1, num_threads=threads)  # fmt: skip
        with autocast(on, bf16):
            summary = train_run(cfg, spec, splits, work / name)
        losses = [r["loss"] for r in metrics_rows(work / name) if r["kind"] == "train"]
        return losses, summary["test"]["loss"]

    want, want_test = run("cpu", torch.device("cpu"), False)
    out = {}
    for precision in ("fp32", "bf16"):
        got, got_test = run(f"device-{precision}", device, precision == "bf16")
        rel = [abs(g - w) / max(abs(w), 1e-12) for g, w in zip([*got, got_test], [*want, want_test])]
        same = len(got) == len(want) == steps
        seen = {"losses": got, "cpu_losses": want, "test_loss": got_test, "cpu_test_loss": want_test}
        if precision == "fp32":
            out["finetune_fp32"] = check("finetune_fp32", max(rel) if same else None, **seen)
        else:
            out["finetune_bf16"] = check("finetune_bf16", rel[0] if same else None, **seen)
            out["finetune_bf16_steps"] = check("finetune_bf16_steps", max(rel[1:]) if same else None)
    return {"checks": out, "steps": steps, "batch_size": batch}


# ---------------------------------------------------------------- the run


class Report:
    """The report, written after every part; a failed part is recorded with its error and the rest go on.

    A part that would start after ``budget_s`` is skipped (recorded under ``over_budget``): the
    run stays near its budget even when one part is slower than planned.
    """

    def __init__(self, path: Path, head: dict[str, Any], budget_s: float):
        self.path, self.data = path, {**head, "budget_s": budget_s, "parts_s": {}, "errors": {}, "over_budget": []}
        self.budget_s, self.started = budget_s, time.perf_counter()
        self.write()

    def part(self, name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        if started - self.started > self.budget_s:
            self.data[name] = {"skipped": True, "reason": f"the {self.budget_s:.0f} s budget was spent before it (--budget-s)"}
            self.data["over_budget"].append(name)
            print(f"gpu-check: {name} skipped: over the {self.budget_s:.0f} s budget", flush=True)
            self.write()
            return None
        print(f"gpu-check: {name} ...", flush=True)
        try:
            result = fn()
            self.data[name] = result
        except Exception as exc:  # noqa: BLE001  one failed part must not hide the others
            result = None
            self.data["errors"][name] = "".join(traceback.format_exception(exc))[-4000:]
            print(f"gpu-check: {name} failed: {exc!r}", flush=True)
        self.data["parts_s"][name] = round(time.perf_counter() - started, 1)
        print(f"gpu-check: {name} done in {self.data['parts_s'][name]} s", flush=True)
        self.write()
        return result

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", "--smoke", action="store_true", dest="dry_run", help="CPU, tiny encoders, few steps: every part but the CUDA calls")
    p.add_argument("--report", type=Path, default=Path("gpu_report.json"))
    p.add_argument("--steps", type=int, help="timed pre-training steps (paper shape: 200)")
    p.add_argument("--warmup", type=int, help="untimed steps before them (20)")
    p.add_argument("--ddp-steps", type=int, help="steps of the reference and DDP runs (20)")
    p.add_argument("--tag-sentences", type=int, help="sentences tagged for the throughput (20000)")
    p.add_argument("--parity-sentences", type=int, help="sentences compared between the device and the CPU (16)")
    p.add_argument("--finetune-steps", type=int, help="fine-tuning steps compared (4)")
    p.add_argument("--shape", choices=("paper", "tiny"), help="encoder size and default amounts (default: paper; --dry-run: tiny)")
    p.add_argument("--batch-size", type=int, help="override the paper profile's batch size (48), e.g. to try the paper shape on a CPU")
    p.add_argument("--no-ddp", action="store_true", help="skip the DDP part")
    p.add_argument("--budget-s", type=float, default=420.0, help="start no part after this many seconds (420: with the part then running, about 8 min)")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoders in the timed pre-training run")
    p.add_argument("--peak-flops", type=float, help="the device's dense bf16 peak FLOP/s, for a GPU missing from the table")
    p.add_argument("--threads", type=int, help="torch CPU threads (dry run: 1)")
    p.add_argument("--work-dir", type=Path, help="keep the runs here (default: a temporary directory, removed)")
    args = p.parse_args(argv)
    shape = {"paper": PAPER, "tiny": TINY}[args.shape or ("tiny" if args.dry_run else "paper")]
    for name in ("steps", "warmup", "ddp_steps", "tag_sentences", "parity_sentences", "finetune_steps"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(shape, name))
    if args.warmup < 1 or args.steps < 1 or args.ddp_steps < 2 or args.finetune_steps < 1:
        p.error("--warmup, --steps and --finetune-steps must be >= 1, --ddp-steps >= 2")
    if args.dry_run and args.threads is None:
        args.threads = 1
    args.shape = shape
    return args


def fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def summary_lines(data: dict[str, Any]) -> list[str]:
    """What the report holds, a line a figure: MFU with the peak it was taken against, each check with its tolerance."""
    lines = []
    pre = data.get("pretrain") or {}
    if "mfu" in pre:
        against = f"of {pre['peak_flops'] / 1e12:.0f} TFLOP/s dense bf16, {pre['peak_source']}" if pre["peak_flops"] else f"({pre['mfu_reason']})"
        lines.append(f"pretrain: {pre['tokens_per_s']:,.0f} text tokens/s ({pre['all_tokens_per_s']:,.0f} with the concept encoder's) over "
                     f"{pre['steps_timed']} steps after {pre['warmup_steps']}; {pre['model_flops_per_s'] / 1e12:.3g} model TFLOP/s; "
                     f"MFU {fmt(pre['mfu'])} {against}")  # fmt: skip
    ddp = data.get("ddp") or {}
    if "max_rel_diff" in ddp:
        lines.append(f"ddp: {ddp['world']} processes ({ddp['backend']}), losses of {ddp['steps']} steps within {fmt(ddp['max_rel_diff'], '.2e')} "
                     f"(tolerance {ddp['tolerance']:g}) of one process; speed-up {fmt(ddp['speedup'], '.2f')}")  # fmt: skip
    elif ddp.get("skipped"):
        lines.append(f"ddp: skipped ({ddp['reason']})")
    for part in ("tagger", "encoding", "finetune"):
        for name, c in ((data.get(part) or {}).get("checks") or {}).items():
            lines.append(f"{name}: {fmt(c['measured'], '.2e')} (tolerance {c['tolerance']:g}) {'ok' if c['ok'] else 'FAILED'}")
    for name, error in data["errors"].items():
        lines.append(f"{name}: ERROR {error.strip().splitlines()[-1]}")
    return [f"gpu-check: {line}" for line in lines]


def last_line(data: dict[str, Any]) -> tuple[str, bool]:
    """The summary line, and whether every check that ran passed (and no part errored)."""
    pre = data.get("pretrain") or {}
    ddp = data.get("ddp")
    if "ddp" in data["errors"] or not isinstance(ddp, dict):
        ddp_ok = "error" if "ddp" in data["errors"] else "not_run"
    else:
        ddp_ok = "skipped" if ddp.get("skipped") else str(bool(ddp["ok"])).lower()
    parts = ("inputs", "reference", "tagger", "encoding", "finetune")  # the parity checks and what they need
    checks = [c for part in parts[2:] for c in (data.get(part) or {}).get("checks", {}).values()]
    if any(p in data["errors"] for p in parts):
        parity = "error"
    elif any(p in data.get("over_budget", []) for p in parts):
        parity = "skipped"
    else:
        parity = str(len(checks) == len(TOL) and all(c["ok"] for c in checks)).lower()
    tag = ((data.get("tagger") or {}).get("speed") or {}).get("sentences_per_s")
    line = f"pretrain_mfu={fmt(pre.get('mfu'))} ddp_ok={ddp_ok} tag_sentences_per_s={fmt(tag, '.1f')} cuda_cpu_parity={parity}"
    ok = not data["errors"] and not data.get("over_budget") and ddp_ok in ("true", "skipped") and parity == "true"
    return line, ok


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check: no CUDA device visible; on a CPU machine run --dry-run", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu" if args.dry_run else "cuda")
    visible = 2 if args.dry_run else torch.cuda.device_count()
    shape: Shape = args.shape
    sizes = {**(TINY_OVERRIDES if shape is TINY else {}), **({"batch_size": args.batch_size} if args.batch_size else {})}
    base = PretrainConfig.model_validate(load_file(PAPER_PROFILE)["pretrain"]).model_copy(
        update={"device": device.type, "precision": "bf16", "num_threads": args.threads, "concept_map": False, **sizes}
    )  # fmt: skip
    head = {"mode": "dry-run" if args.dry_run else "gpu", "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "visible_gpus": 0 if args.dry_run else visible,
            "torch": torch.__version__, "cuda": torch.version.cuda, "tolerances": {**TOL, **{f"ddp_{k}": v for k, v in DDP_TOL.items()}},
            "shape": {**vars(shape), "batch_size": base.batch_size, "max_length": base.max_length, "freeze_layers": base.freeze_layers,
                      "steps": args.steps, "warmup": args.warmup, "ddp_steps": args.ddp_steps}}  # fmt: skip
    report = Report(args.report, head, args.budget_s)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-")) if args.work_dir is None else args.work_dir
    try:
        run_parts(args, report, base, device, visible, shape, work)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    line, ok = last_line(report.data)
    report.data["last_line"] = line
    report.write()
    print("\n".join([*summary_lines(report.data), f"gpu-check: report {args.report}", line]))
    return 0 if ok else 1


def make_inputs(args: argparse.Namespace, base: PretrainConfig, shape: Shape, work: Path) -> dict[str, Any]:
    """The tokenizer, both encoder directories, the two pre-training data sets, the texts to tag."""
    words = make_tokenizer(work / "tokenizer", 3000 if shape is TINY else 20000, seed=0)
    with_dropout, without_dropout = make_encoders(work / "models", shape, work / "tokenizer")
    data = pretrain_data(work / "pretrain-data" / "annotated.parquet", words, base, args.warmup + args.steps, shape.words, seed=1)
    ref_data = pretrain_data(work / "reference-data" / "annotated.parquet", words, base, args.ddp_steps, shape.words, seed=2)
    texts = [ex.text for ex in synthetic_examples(words, args.tag_sentences, (8, 45), seed=3)]  # demo-like sentences, ~26 words
    labels = sorted({c for ex in load_annotated(ref_data).train[:50] for _, _, c in ex.spans})[:8]
    return {"words": words, "with_dropout": with_dropout, "without_dropout": without_dropout, "data": data, "ref_data": ref_data,
            "texts": texts, "labels": labels}  # fmt: skip


def run_parts(args: argparse.Namespace, report: Report, base: PretrainConfig, device: torch.device, visible: int, shape: Shape, work: Path) -> None:
    """Inputs, then the parts in order of risk: a DDP launch that hangs comes last."""
    inputs = report.part("inputs", lambda: make_inputs(args, base, shape, work))
    if inputs is None:
        return
    report.data["inputs"] = {"tokenizer_words": len(inputs["words"]), "labels": inputs["labels"], "tag_sentences": len(inputs["texts"])}
    report.part("pretrain", lambda: pretrain_part(args, base, inputs["with_dropout"], inputs["data"], work / "pretrain", device))

    world = 1 if args.no_ddp else ddp_world(base.batch_size, visible)
    ref_cfg = reference_config(args, base, inputs["without_dropout"], world)
    reference = report.part("reference", lambda: reference_part(ref_cfg, inputs["ref_data"], work / "reference"))
    if reference is not None:
        report.data["reference"] = {k: v for k, v in reference.items() if k != "rows"}
        out, texts, labels = Path(reference["out"]), inputs["texts"], inputs["labels"]
        report.part("tagger", lambda: tagger_part(out, device, texts, args.parity_sentences, labels))
        sentences = [t.split() for t in texts[: args.parity_sentences]]
        report.part("encoding", lambda: encoding_part(out, device, sentences, base.max_length))
        report.part("finetune", lambda: finetune_part(out, device, inputs["words"], args.finetune_steps, base.max_length, work / "finetune", args.threads))
    if world < 2:
        report.data["ddp"] = {"skipped": True, "reason": "--no-ddp" if args.no_ddp else f"{visible} GPU visible"}
    elif reference is not None:
        report.part("ddp", lambda: ddp_part(ref_cfg, inputs["ref_data"], work / "ddp", reference, world))
    else:
        report.data["ddp"] = {"skipped": True, "reason": "the one-process reference run failed"}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
