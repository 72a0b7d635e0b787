"""The zero-shot tagger: the pre-trained text and concept encoders, kept together, score words against label names.

A model directory is described in ``settings`` (two encoders and ``dual_encoder.json``).

Scoring is the pre-training's, term for term: labels as concept names (``label_vectors``),
texts as raw text read at each word's first sub-token (``plan``), pre-training's logits
(``scoring``). A test checks these logits against ``DualEncoder.forward`` itself.

Cost: label vectors are cached on the tagger (one model per tagger) per label string (a bounded
LRU of ``max_labels``: ``label_cache``), so a
fixed label set costs one concept-encoder pass; the text side is one forward pass per
window, then one (M, D) x (D, C) product per batch for the M words of the batch, which for
thousands of labels is still small next to the encoder. Texts longer than the encoder's
window are read in overlapping windows (``nuner_core.text.windows``); nothing is truncated.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, overload

import numpy as np
import torch

from nuner_core.devices import Precision, pad_id, resolve_device, uses_bf16
from nuner_core.dual_encoder.model import DualEncoder, load_encoder
from nuner_core.paths import expand_path
from nuner_core.stage_api import Progress, StageError
from nuner_core.tagging.decode import DEFAULT_DECODING, Decoding, Entity
from nuner_core.tagging.label_cache import DEFAULT_MAX_LABELS
from nuner_core.tagging.label_vectors import LabelVectors
from nuner_core.tagging.labels import normalise_label
from nuner_core.tagging.onnx_backend import BACKENDS, OnnxZeroShotTagger
from nuner_core.tagging.plan import Plan, TagStats, check_texts, forward_tokens, frame_windows, plan_texts, position_limit
from nuner_core.tagging.predicting import predict_entities
from nuner_core.tagging.scoring import Best, logits, score_all, score_best, word_vectors
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


class ZeroShotTagger:
    """Tag words of any text with any label names; see the module docstring for the scoring."""

    def __init__(
        self,
        model: DualEncoder,
        tokenizer: Any,
        concept_tokenizer: Any,
        settings: DualEncoderSettings,
        *,
        path: Path | None = None,
        device: str | torch.device = "auto",
        max_length: int | None = None,
        stride: int | None = None,
        batch_tokens: int = 8192,
        label_batch_size: int = 256,
        chunk_texts: int = 4096,
        precision: Precision = "auto",
        max_labels: int = DEFAULT_MAX_LABELS,
    ) -> None:
        text_width, concept_width = model.text_encoder.config.hidden_size, model.concept_encoder.config.hidden_size
        if text_width != concept_width:
            raise ModelDirectoryError(f"{path or 'model'}: text encoder width {text_width} differs from the concept encoder's {concept_width}")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.concept_tokenizer = concept_tokenizer
        self.settings = settings
        self.path = path
        limit = position_limit(model.text_encoder.config, tokenizer)
        self.max_length, self.framing = frame_windows(tokenizer, limit, max_length, stride, batch_tokens)
        self.window, self.stride = self.framing.window, self.framing.stride
        self.batch_tokens = batch_tokens
        self.chunk_texts = chunk_texts
        self.bf16 = uses_bf16(precision, self.device)
        self.pad_id = pad_id(tokenizer)
        self.stats = TagStats()
        self.labels = LabelVectors(model.concept_encoder, concept_tokenizer, settings, self.device, self.bf16, label_batch_size, self.stats,
                                   max_labels)

    # ------------------------------------------------------------------ loading

    @overload
    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "auto", backend: Literal["torch"] = "torch", **options: Any) -> ZeroShotTagger: ...

    @overload
    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "auto", *, backend: str, **options: Any) -> ZeroShotTagger | OnnxZeroShotTagger: ...

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "auto", backend: str = "torch", **options: Any) -> ZeroShotTagger | OnnxZeroShotTagger:
        """Load a model directory (see the module docstring); ``options`` go to the constructor.

        ``backend`` "onnx" / "onnx-int8": the exported ONNX encoders on onnxruntime (``onnx_backend``; torch unused).
        """
        if backend != "torch":
            if backend not in BACKENDS:
                raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
            return OnnxZeroShotTagger.from_pretrained(path, backend, device, **options)
        root = Path(expand_path(str(path)))
        settings = check_model_dir(root)
        root = root.resolve()
        encoders, tokenizers = [], []
        for name in ENCODERS:
            try:  # load_encoder refuses decoders (GPT-2, T5) with a StageError
                encoders.append(load_encoder(str(root / name)))
                tokenizers.append(load_tokenizer(str(root / name)))
            except (OSError, ValueError, StageError) as exc:
                raise ModelDirectoryError(f"{root}: cannot load {name}/: {exc}") from None
        model = DualEncoder(encoders[0], encoders[1], settings.similarity, settings.temperature, learnable_bias=True, bias_init=settings.logit_bias)
        return cls(model, tokenizers[0], tokenizers[1], settings, path=root, device=device, **options)

    @property
    def threshold(self) -> float:
        """The stored (calibrated) threshold, else DEFAULT_THRESHOLD."""
        return self.settings.threshold if self.settings.threshold is not None else DEFAULT_THRESHOLD

    @property
    def threshold_source(self) -> str:
        return "calibrated" if self.settings.threshold is not None else "default"

    def identity(self) -> str:
        if self.path is None:
            raise ValueError("a tagger built from models in memory has no file identity")
        return model_identity(self.path)

    def __repr__(self) -> str:
        return (f"ZeroShotTagger({self.path}, {self.settings.similarity}, tau={self.settings.temperature}, "
                f"b={self.settings.logit_bias:.3f}, threshold={self.threshold} ({self.threshold_source}), device={self.device})")  # fmt: skip

    # ------------------------------------------------------------------ public API

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
        """Entities of each text (``decode``): ``words``: words take their best label if p >= its threshold,
        adjacent same-label words merge; ``spans``: a run of such words is one entity (split rule in ``decode``).

        ``threshold`` None: the model's stored threshold, else DEFAULT_THRESHOLD; ``thresholds``
        {label: p} overrides it per label. Labels are matched ignoring case, ``_`` and ``-``
        (``labels.normalise_label``); two spellings of one label count once, and entities carry
        the first spelling given. Offsets index the original text.
        """
        return predict_entities(texts, labels, self.threshold if threshold is None else threshold, thresholds, decoding,
                                lambda texts, spans, keys, reduce: self._run(texts, spans, keys, None, reduce, progress))

    def best_labels(
        self, texts: Sequence[str], spans: Sequence[np.ndarray], labels: Sequence[str], progress: Progress | None = None
    ) -> list[Best]:
        """Per text, ((n_words,) index into ``clean_labels(labels)`` of each word's best label, (n_words,) its probability).

        The argmax is taken on the device: thousands of labels cost no (words x labels) copy.
        A word without a token gets label 0 with probability 0.
        """
        texts = check_texts(texts)
        if len(spans) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(spans)} span arrays")
        return self._run(texts, spans, [normalise_label(label) for label in clean_labels(labels)], None, "best", progress)

    def predict_words(self, sentences: Sequence[Sequence[str]], labels: Sequence[str], progress: Progress | None = None) -> list[np.ndarray]:
        """Per sentence of pre-split words, a (n_words, len(labels)) float32 array of p(word is label).

        Columns follow ``labels`` as given (a duplicate gets the same column twice). The words are
        joined by single spaces and read as raw text (see ``join_words``); a word the tokenizer
        turns into nothing gets probability 0 everywhere.
        """
        joined = [join_words(list(words)) for words in sentences]
        return self.score_spans([t for t, _ in joined], [s for _, s in joined], labels, progress)

    def score_spans(
        self,
        texts: Sequence[str],
        spans: Sequence[np.ndarray],
        labels: Sequence[str] | Sequence[Sequence[str]],
        progress: Progress | None = None,
    ) -> list[np.ndarray]:
        """Per text, (n_words, n_labels) float32 probabilities of the words at character ``spans`` (n_words, 2).

        ``labels``: one list for all texts, or one list per text (each text scored against its
        own labels, as calibration does with each sentence's concepts).
        """
        texts = check_texts(texts)
        if len(spans) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(spans)} span arrays")
        if len(labels) > 0 and not isinstance(labels[0], str):
            if len(labels) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(labels)} label lists")
            columns = [[normalise_label(c) for c in clean_and_keep(ls, allow_empty=True)] for ls in labels if not isinstance(ls, str)]
            union = list(dict.fromkeys(label for ls in columns for label in ls))
            return self._run(texts, spans, union, columns, "all", progress)
        given = [normalise_label(label) for label in clean_and_keep([label for label in labels if isinstance(label, str)])]
        unique = list(dict.fromkeys(given))
        probs = self._run(texts, spans, unique, None, "all", progress)
        index = [unique.index(label) for label in given]
        return probs if index == list(range(len(unique))) else [p[:, index] for p in probs]

    def label_vectors(self, labels: Sequence[str]) -> torch.Tensor:
        """(C, D) fp32 concept vectors of ``labels`` (mean-pooled, not normalised), from the cache or one pass."""
        return self.labels.vectors([normalise_label(label) for label in clean_labels(labels)])

    def clear_label_cache(self) -> None:
        self.labels.clear()

    def prepare(self, texts: Sequence[str], spans: Sequence[np.ndarray]) -> Plan:
        """Tokenise raw texts (no truncation), map words to first sub-tokens, cut windows, batch them."""
        return plan_texts(self.tokenizer, texts, spans, self.framing, self.batch_tokens, self.pad_id, forward_tokens(self.device.type))

    # ------------------------------------------------------------------ the loop

    @overload
    def _run(self, texts: list[str], spans: Sequence[np.ndarray], labels: list[str], columns: list[list[str]] | None,
             reduce: Literal["best"], progress: Progress | None) -> list[Best]: ...  # fmt: skip

    @overload
    def _run(self, texts: list[str], spans: Sequence[np.ndarray], labels: list[str], columns: list[list[str]] | None,
             reduce: Literal["all"], progress: Progress | None) -> list[np.ndarray]: ...  # fmt: skip

    @torch.inference_mode()
    def _run(
        self,
        texts: list[str],
        spans: Sequence[np.ndarray],
        labels: list[str],
        columns: list[list[str]] | None,
        reduce: Literal["best", "all"],
        progress: Progress | None,
    ) -> list[Best] | list[np.ndarray]:
        """Score every word of every text against ``labels`` (or, with ``columns``, its own label list).

        reduce "best": per text ((n_words,) best label index, (n_words,) its probability), the
        argmax taken on the device so thousands of labels never leave it; "all": per text an
        (n_words, n_labels) probability array.
        """
        started = time.perf_counter()
        matrix = self.labels.matrix(labels) if labels else torch.zeros((0, 1), device=self.device)  # (C, D)
        bias = self.model.logit_bias
        index = {label: i for i, label in enumerate(labels)}
        text_columns = None if columns is None else [torch.tensor([index[c] for c in cs], dtype=torch.long, device=self.device) for cs in columns]
        best: list[Best] = []
        every: list[np.ndarray] = []
        for lo in range(0, len(texts), self.chunk_texts):
            chunk_texts, chunk_spans = texts[lo : lo + self.chunk_texts], spans[lo : lo + self.chunk_texts]
            plan = self.prepare(chunk_texts, chunk_spans)
            width = [len(columns[lo + i]) if columns is not None else len(labels) for i in range(len(chunk_texts))]
            chunk_best: list[Best] = [(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float32)) for n in plan.n_words]
            chunk_all = [np.zeros((n, w), dtype=np.float32) for n, w in zip(plan.n_words, width)] if reduce == "all" else []
            for vectors, segments in word_vectors(self.model.text_encoder, plan, self.device, self.bf16, self.settings):
                if text_columns is not None:
                    for text, words, r0, r1 in segments:
                        cols = text_columns[lo + text]
                        if len(cols) and r1 > r0:
                            chunk_all[text][words] = torch.sigmoid(logits(vectors[r0:r1], matrix[cols], self.settings, bias)).cpu().numpy()
                elif reduce == "best":
                    score_best(vectors, segments, matrix, self.settings, bias, chunk_best)
                else:
                    score_all(vectors, segments, matrix, self.settings, bias, chunk_all)
            best.extend(chunk_best)
            every.extend(chunk_all)
            self.stats.add_text_side(plan.stats)
            if progress is not None:
                progress.update(lo + len(chunk_texts), len(texts), f"{self.stats.windows:,} windows")
        self.stats.seconds += time.perf_counter() - started
        return best if reduce == "best" else every
