"""Zero-shot F1 of a trained tagger per backend and decoding, on the shared benchmarks as the evaluate stage reads them.

The evaluate stage's zero_shot protocol, its functions as they are (``nuner_core.evaluation``):
the demo profile's benchmarks (``evaluate.benchmarks``: MIT Restaurant, MIT Movie, MIT Movie
trivia, JNLPBA from the shared assets) with its seeded test subsamples (``max_test_sentences``,
``test_seed``), each type named as the protocol names it, and the model's calibrated threshold.
Probabilities are computed once per (backend, benchmark); every decoding is scored from them.
ONNX backends read an export (``export_model(..., onnx=True, int8=True)``) written into a
temporary directory, never into the model directory. One model, no sampling: deterministic.

    .venv/bin/python benchmarks/zero_shot_f1.py --model data/pretrain/<key> [--backends torch,onnx,onnx-int8] [--decodings words,spans]

Prints one table per metric (entity micro-F1, token macro-F1: rows backend/decoding, a column per
benchmark and the mean of the four); last line ``<backend>/<decoding>=<mean entity micro-F1> ...``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from nuner_core.config import load_config
from nuner_core.evaluation.benchmarks import Benchmark, load_benchmark, resolve_spec
from nuner_core.evaluation.zero_shot import label_names, score_at, word_probabilities
from nuner_core.tagging import ZeroShotTagger, export_model

METRICS = ("entity_micro_f1", "token_macro_f1")


def shared_benchmarks(profile: str = "demo") -> tuple[list[Benchmark], dict[str, dict[str, str]]]:
    """The profile's benchmarks with its test subsamples, and its zero-shot label mapping, as the evaluate stage loads them."""
    config = load_config(profile).evaluate
    benches = [load_benchmark(resolve_spec(item), config.max_test_sentences, config.test_seed) for item in config.benchmarks]
    return benches, dict(config.zero_shot.labels)


def taggers(model: Path, backends: list[str], work: Path) -> dict[str, Any]:
    """One tagger per backend; the ONNX ones from an export of ``model`` under ``work``."""
    out: dict[str, Any] = {}
    export = None
    for backend in backends:
        if backend == "torch":
            out[backend] = ZeroShotTagger.from_pretrained(model, device="cpu")
            continue
        if export is None:
            export = export_model(model, work / "onnx", onnx=True, int8=True)
        out[backend] = ZeroShotTagger.from_pretrained(export, backend=backend, device="cpu", threads=torch.get_num_threads())
    return out


def zero_shot_f1(model: Path, backends: list[str], decodings: list[str], benches: list[Benchmark],
                 mapping: dict[str, dict[str, str]]) -> dict[tuple[str, str, str, str], float]:  # fmt: skip
    """(backend, decoding, benchmark, metric) -> F1 in [0, 1], at each tagger's calibrated threshold."""
    scores: dict[tuple[str, str, str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="zero-shot-f1-") as tmp:
        for backend, tagger in taggers(model, backends, Path(tmp)).items():
            for bench in benches:
                names = label_names(bench.types, mapping.get(bench.name))
                probabilities = word_probabilities(tagger, bench.test.sentences, names)
                for decoding in decodings:
                    score = score_at(probabilities, bench.test.sentences, bench.types, tagger.threshold, decoding)  # type: ignore[arg-type]
                    for metric in METRICS:
                        scores[(backend, decoding, bench.name, metric)] = score.metric(metric)
    return scores


def mean_f1(scores: dict[tuple[str, str, str, str], float], backend: str, decoding: str, metric: str = "entity_micro_f1") -> float:
    """The mean over the benchmarks, in F1 points."""
    return 100 * statistics.mean(v for (b, d, _, m), v in scores.items() if (b, d, m) == (backend, decoding, metric))


def print_tables(scores: dict[tuple[str, str, str, str], float], benches: list[Benchmark]) -> None:
    pairs = list(dict.fromkeys((b, d) for b, d, _, _ in scores))
    for metric in METRICS:
        print(f"\n{metric} (%), test subsamples: " + ", ".join(f"{b.name} {len(b.test.sentences)}" for b in benches))
        print("| backend | decoding | " + " | ".join(b.name for b in benches) + " | mean |")
        print("| --- | --- | " + " | ".join("---" for _ in benches) + " | --- |")
        for backend, decoding in pairs:
            cells = [f"{100 * scores[(backend, decoding, b.name, metric)]:.1f}" for b in benches]
            print(f"| {backend} | {decoding} | " + " | ".join(cells) + f" | {mean_f1(scores, backend, decoding, metric):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="a two-encoder model directory (a pretrain run directory)")
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    parser.add_argument("--decodings", default="words,spans")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    benches, mapping = shared_benchmarks()
    scores = zero_shot_f1(args.model, args.backends.split(","), args.decodings.split(","), benches, mapping)
    print_tables(scores, benches)
    pairs = list(dict.fromkeys((b, d) for b, d, _, _ in scores))
    print(" ".join(f"{b}/{d}={mean_f1(scores, b, d):.2f}" for b, d in pairs))


if __name__ == "__main__":
    main()
