"""The zero-shot tagger on onnxruntime: both encoders as ONNX graphs, everything else numpy; torch is never imported.

``nuner export-model --onnx [--int8]`` writes, next to ``dual_encoder.json``, ``text_encoder.onnx``
and ``concept_encoder.onnx`` (``input_ids``, ``attention_mask`` -> ``last_hidden_state``, dynamic
batch and sequence axes) and, with ``--int8``, ``text_encoder.int8.onnx`` (onnxruntime's dynamic
quantisation: int8 weights; the concept encoder runs once per label set and stays fp32), and
lists them in ``onnx.json`` ({backend: {encoder: file}}), with ``scorer.onnx`` (SCORER). Tokenizers stay in the
encoder directories.

The scoring is the PyTorch tagger's, term for term (plan, first sub-tokens, windows, mean-pooled
label vectors, tau * cos + b or h . c / tau + b), so fp32 ONNX gives the same entities; a test checks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from nuner_core.devices import pad_id
from nuner_core.paths import expand_path
from nuner_core.stage_api import Progress
from nuner_core.tagging.decode import DEFAULT_DECODING, Decoding, Entity
from nuner_core.tagging.label_cache import DEFAULT_MAX_LABELS, LabelCache
from nuner_core.tagging.labels import normalise_label
from nuner_core.tagging.plan import (
    Plan,
    TagStats,
    check_texts,
    concept_batches,
    concept_token_ids,
    forward_tokens,
    frame_windows,
    pad_rows,
    plan_texts,
    position_limit,
)
from nuner_core.tagging.predicting import predict_entities
from nuner_core.tagging.settings import (
    DEFAULT_THRESHOLD,
    ENCODERS,
    DualEncoderSettings,
    ModelDirectoryError,
    check_model_dir,
    clean_and_keep,
    clean_labels,
    model_identity,
)
from nuner_core.text.words import join_words
from nuner_core.tokenizer import load_tokenizer

Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnx", "onnx-int8")
ONNX_SETTINGS = "onnx.json"
ONNX_FILES: dict[str, dict[str, str]] = {  # backend -> encoder -> file, as export_model writes them
    "onnx": {"text_encoder": "text_encoder.onnx", "concept_encoder": "concept_encoder.onnx"},
    "onnx-int8": {"text_encoder": "text_encoder.int8.onnx", "concept_encoder": "concept_encoder.onnx"},
}
OUTPUT = "last_hidden_state"
SCORER = "scorer.onnx"  # (words, labels) -> logits = words . labels^T, run on onnxruntime's threads (onnx_export.write_scorer)
MAX_LOGITS = 1 << 24  # (words x labels) entries scored at once, as the PyTorch tagger's scoring
# Padded tokens per encoder batch (at least one full window). Smaller than the PyTorch tagger's 8192:
# onnxruntime's CPU kernels run a 512-token batch's activations from cache, and measured
# (MiniLM-L6, 1 thread, 200 sentences) its encoder time falls 30% (int8) and 15% (fp32) from 8192
# to 512, while PyTorch's does not change; benchmarks/onnx_bench.py times both.
ONNX_BATCH_TOKENS = 512


def onnx_files(root: Path, backend: str) -> dict[str, Path]:
    """The ONNX file of each encoder for ``backend`` in a model directory, or a ModelDirectoryError saying how to make them."""
    listed: dict[str, dict[str, str]] = {}
    if (root / ONNX_SETTINGS).is_file():
        listed = json.loads((root / ONNX_SETTINGS).read_text(encoding="utf-8")).get("backends", {})
    if backend not in listed:
        flag = "--onnx --int8" if backend == "onnx-int8" else "--onnx"
        raise ModelDirectoryError(f"{root}: no {backend} export ({ONNX_SETTINGS} lists {sorted(listed) or 'none'}); "
                                  f"write one with `nuner export-model SRC DEST {flag}`")  # fmt: skip
    files = {name: root / listed[backend][name] for name in ENCODERS}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ModelDirectoryError(f"{root}: {ONNX_SETTINGS} lists missing files: {', '.join(missing)}")
    return files


def _session(path: Path, providers: list[str], threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=providers)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def _normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as torch.nn.functional.normalize (eps 1e-12)."""
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return out


class OnnxZeroShotTagger:
    """``ZeroShotTagger``'s public API on onnxruntime (CPU by default); see the module docstring."""

    def __init__(
        self, root: Path, backend: str, settings: DualEncoderSettings, *, device: str = "auto", threads: int | None = None,
        max_length: int | None = None, stride: int | None = None, batch_tokens: int | None = None, label_batch_size: int = 256,
        chunk_texts: int = 4096, max_labels: int = DEFAULT_MAX_LABELS,
    ) -> None:  # fmt: skip
        files = onnx_files(root, backend)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
        self.text_session = _session(files["text_encoder"], providers, threads)
        self.concept_session = _session(files["concept_encoder"], providers, threads)
        self.scorer = _session(root / SCORER, providers, threads) if (root / SCORER).is_file() else None  # older exports: numpy
        self.tokenizer = load_tokenizer(str(root / "text_encoder"))
        self.concept_tokenizer = load_tokenizer(str(root / "concept_encoder"))
        self.settings, self.path, self.backend, self.device = settings, root, backend, providers[0]
        config = json.loads((root / "text_encoder" / "config.json").read_text(encoding="utf-8"))  # what position_limit reads
        limit = position_limit(SimpleNamespace(**{"pad_token_id": None, "model_type": "", **config}), self.tokenizer)
        batch_tokens = batch_tokens or max(ONNX_BATCH_TOKENS, max_length or limit)  # None: ONNX_BATCH_TOKENS, or one full window
        self.max_length, self.framing = frame_windows(self.tokenizer, limit, max_length, stride, batch_tokens)
        self.window, self.stride = self.framing.window, self.framing.stride
        self.batch_tokens, self.label_batch_size, self.chunk_texts = batch_tokens, label_batch_size, chunk_texts
        self.pad_id = pad_id(self.tokenizer)
        self.stats = TagStats()
        self.cache: LabelCache[np.ndarray] = LabelCache(self.stats, max_labels)  # label -> (D,) fp32 concept vector (mean-pooled)

    @classmethod
    def from_pretrained(cls, path: str | Path, backend: str = "onnx", device: str = "auto", **options: Any) -> OnnxZeroShotTagger:
        root = Path(expand_path(str(path)))
        settings = check_model_dir(root)
        return cls(root.resolve(), backend, settings, device=device, **options)

    @property
    def threshold(self) -> float:
        return self.settings.threshold if self.settings.threshold is not None else DEFAULT_THRESHOLD

    @property
    def threshold_source(self) -> str:
        return "calibrated" if self.settings.threshold is not None else "default"

    def identity(self) -> str:
        return f"{model_identity(self.path)}-{self.backend}"

    def __repr__(self) -> str:
        return f"OnnxZeroShotTagger({self.path}, {self.backend}, threshold={self.threshold} ({self.threshold_source}), {self.device})"

    # ------------------------------------------------------------------ public API (as ZeroShotTagger's)

    def predict(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        threshold: float | None = None,
        progress: Progress | None = None,
        *,
        thresholds: Mapping[str, float] | None = None,
        decoding: Decoding = DEFAULT_DECODING,
    ) -> list[list[Entity]]:
        """The torch tagger's ``predict``, the same decoding, thresholds and label normalisation."""
        def score(texts: list[str], spans: list[np.ndarray], keys: list[str], reduce: Literal["best", "all"]) -> list[Any]:
            probs = self.score_spans(texts, spans, keys, progress)
            return probs if reduce == "all" else [_best(p) for p in probs]

        return predict_entities(texts, labels, self.threshold if threshold is None else threshold, thresholds, decoding, score)

    def best_labels(
        self, texts: Sequence[str], spans: Sequence[np.ndarray], labels: Sequence[str], progress: Progress | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        return [_best(p) for p in self.score_spans(texts, spans, clean_labels(labels), progress)]

    def predict_words(self, sentences: Sequence[Sequence[str]], labels: Sequence[str], progress: Progress | None = None) -> list[np.ndarray]:
        joined = [join_words(list(words)) for words in sentences]
        return self.score_spans([t for t, _ in joined], [s for _, s in joined], labels, progress)

    def score_spans(
        self, texts: Sequence[str], spans: Sequence[np.ndarray], labels: Sequence[str], progress: Progress | None = None
    ) -> list[np.ndarray]:
        """Per text, (n_words, len(labels)) float32 probabilities; columns follow ``labels`` as given."""
        texts = check_texts(texts)
        if len(spans) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(spans)} span arrays")
        given = [normalise_label(label) for label in clean_and_keep(labels)]  # as the torch tagger embeds them
        unique = clean_labels(given)
        probs = self._run(texts, spans, unique, progress)
        index = [unique.index(label) for label in given]
        return probs if index == list(range(len(unique))) else [p[:, index] for p in probs]

    def label_vectors(self, labels: Sequence[str]) -> np.ndarray:
        """(C, D) fp32 concept vectors (mean-pooled, not normalised), from the cache or one pass."""
        keys = [normalise_label(label) for label in clean_labels(labels)]
        return np.stack(self.cache.lookup(keys, self._embed))

    def clear_label_cache(self) -> None:
        self.cache.clear()

    def prepare(self, texts: Sequence[str], spans: Sequence[np.ndarray]) -> Plan:
        device_type = "cpu" if self.device == "CPUExecutionProvider" else "cuda"
        return plan_texts(self.tokenizer, texts, spans, self.framing, self.batch_tokens, self.pad_id, forward_tokens(device_type))

    # ------------------------------------------------------------------ the loop

    def _embed(self, missing: list[str]) -> dict[str, np.ndarray]:
        fresh: dict[str, np.ndarray] = {}
        ids = concept_token_ids(self.concept_tokenizer, missing, self.settings.max_concept_length, self.stats)
        for part in concept_batches(ids, self.label_batch_size):
            c_ids, c_mask = pad_rows([ids[i] for i in part], pad_id(self.concept_tokenizer))  # (C, L)
            hc = self.concept_session.run([OUTPUT], {"input_ids": c_ids, "attention_mask": c_mask})[0]  # (C, L, D)
            weights = c_mask.astype(np.float32)[..., None]  # (C, L, 1): mean_pool's
            vectors = (hc * weights).sum(1) / np.maximum(weights.sum(1), 1.0)  # (C, D)
            for r, i in enumerate(part):
                fresh[missing[i]] = vectors[r].astype(np.float32)
            self.stats.concept_batches += 1
        return fresh

    def _matrix(self, labels: list[str]) -> np.ndarray:
        matrix = self.label_vectors(labels)  # (C, D)
        return _normalize(matrix) if self.settings.similarity == "cosine" else matrix

    def _logits(self, words: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """(M, C) words . labels^T, on the scorer graph when the export has one (see SCORER)."""
        if self.scorer is None:
            out: np.ndarray = words @ matrix.T
            return out
        logits: np.ndarray = self.scorer.run(["logits"], {"words": np.ascontiguousarray(words), "labels": matrix})[0]
        return logits

    def _run(self, texts: list[str], spans: Sequence[np.ndarray], labels: list[str], progress: Progress | None) -> list[np.ndarray]:
        """Per text an (n_words, n_labels) probability array (a word without a token: 0 everywhere)."""
        started = time.perf_counter()
        matrix = self._matrix(labels)  # (C, D)
        scale = self.settings.temperature if self.settings.similarity == "cosine" else 1.0 / self.settings.temperature
        out: list[np.ndarray] = []
        for lo in range(0, len(texts), self.chunk_texts):
            plan = self.prepare(texts[lo : lo + self.chunk_texts], spans[lo : lo + self.chunk_texts])
            chunk = [np.zeros((n, len(labels)), dtype=np.float32) for n in plan.n_words]
            for batch in plan.batches:
                ids, mask = plan.arrays(batch)  # (B, T)
                h = self.text_session.run([OUTPUT], {"input_ids": ids, "attention_mask": mask})[0]  # (B, T, D)
                rows, cols, segments = plan.segments(batch)
                vectors = h[rows, cols].astype(np.float32)  # (M, D)
                if self.settings.similarity == "cosine":
                    vectors = _normalize(vectors)
                step = max(1, MAX_LOGITS // max(1, len(labels)))
                probs = np.concatenate([_sigmoid(scale * self._logits(vectors[r : r + step], matrix) + self.settings.logit_bias)
                                        for r in range(0, len(vectors), step)]) if len(vectors) else np.zeros((0, len(labels)))  # fmt: skip
                for text, words, r0, r1 in segments:
                    chunk[text][words] = probs[r0:r1]
                plan.stats.encoder_batches += 1
            out.extend(chunk)
            self.stats.add_text_side(plan.stats)
            if progress is not None:
                progress.update(lo + len(chunk), len(texts), f"{self.stats.windows:,} windows")
        self.stats.seconds += time.perf_counter() - started
        return out


def _best(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_words,) each word's best label and its probability (label 0 with probability 0 when there is no label)."""
    if not probs.shape[1]:
        return np.zeros(len(probs), np.int64), np.zeros(len(probs), np.float32)
    return probs.argmax(1), probs.max(1)
