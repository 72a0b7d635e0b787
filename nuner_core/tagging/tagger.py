"""The zero-shot tagger: the pre-trained text and concept encoders, kept together, score words against label names.

A model directory is described in ``settings`` (two encoders and ``dual_encoder.json``).

Scoring is the pre-training's, term for term (``nuner_core.pretraining``):

- a label is tokenised like a concept name (``build_vocab``: the concept tokenizer with its
  special tokens, truncated to ``max_concept_length`` tokens, 16 unless the model says
  otherwise) and its vector is ``mean_pool`` of the concept encoder's last hidden states over
  all of its tokens, special ones included;
- the text is tokenised as raw text (as ``encode`` did: no pre-splitting), and a word's
  vector is the text encoder's last hidden state at the word's first sub-token;
- logit = tau * cos(h, c) + b (cosine) or h . c / tau + b (dot); p = sigmoid(logit).

A test checks these logits against ``DualEncoder.forward`` itself.

Cost: label vectors are cached on the tagger (one model per tagger) per label string, so a
fixed label set costs one concept-encoder pass; the text side is one forward pass per
window, then one (M, D) x (D, C) product per batch for the M words of the batch, which for
thousands of labels is still small next to the encoder. Texts longer than the encoder's
window are read in overlapping windows (``windows``); nothing is truncated.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nuner_core.paths import expand_path
from nuner_core.pretraining.model import DualEncoder, load_encoder, load_tokenizer, mean_pool
from nuner_core.stage_api import Progress, StageError
from nuner_core.tagging.decode import Entity, check_threshold, decode_entities
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
from nuner_core.tagging.windows import best_window, plan_windows
from nuner_core.tagging.words import join_words, segment_words

log = logging.getLogger(__name__)

# Architectures whose position ids start after the padding index (RoBERTa's 514 positions hold 512 tokens).
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "roberta-prelayernorm", "data2vec-text", "mpnet", "xmod", "ibert"}
_MAX_LOGITS = 1 << 24  # (words x labels) entries scored at once: 64 MiB of fp32


def position_limit(config, tokenizer) -> int:
    """Tokens (special ones included) one forward pass of the text encoder can take."""
    limits = []
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        offset = (config.pad_token_id or 0) + 1 if config.model_type in _OFFSET_POSITIONS else 0
        limits.append(positions - offset)
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:  # "no limit" is stored as a huge number
        limits.append(model_max)
    return min(limits) if limits else 512


@dataclass
class TagStats:
    """Running counts of a tagger (nothing is dropped silently)."""

    texts: int = 0
    words: int = 0
    words_without_token: int = 0  # the tokenizer produced no token for them (e.g. a lone control character): never labelled
    windows: int = 0  # encoder windows (a text longer than the window takes several)
    long_texts: int = 0  # texts that needed more than one window
    tokens: int = 0  # text tokens through the encoder, special ones included, padding not
    encoder_batches: int = 0
    concept_batches: int = 0  # concept-encoder forward passes
    labels_encoded: int = 0  # label names embedded (cache misses)
    labels_truncated: int = 0  # names longer than max_concept_length tokens: cut, as pre-training cut them
    seconds: float = 0.0


@dataclass
class _Window:
    text: int  # index of the text in the chunk
    ids: np.ndarray  # (L,) token ids, special tokens included
    positions: np.ndarray  # (m,) positions in ``ids`` of the first sub-tokens of the words scored from this window
    words: np.ndarray  # (m,) the indices of those words in their text


@dataclass
class Plan:
    """Texts cut into windows and length-sorted batches of windows; public for the benchmark's bare forward pass."""

    windows: list[_Window]
    batches: list[list[int]]  # window indices, shortest windows first
    n_words: list[int]  # per text
    pad_id: int
    stats: TagStats = field(default_factory=TagStats)

    def tensors(self, batch: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) input ids and attention mask of one batch."""
        rows = [self.windows[i].ids for i in batch]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = r
            mask[b, : len(r)] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)


def length_batches(lengths: Sequence[int], batch_tokens: int, spread: float = 1.25, min_batch: int = 8) -> list[list[int]]:
    """Indices of sequences in length-sorted batches of at most ``batch_tokens`` padded tokens.

    A batch also closes when the next sequence is more than ``spread`` times (plus 4 tokens) as
    long as the batch's shortest, once it holds ``min_batch`` sequences: a token budget alone
    lets one batch run from 8 to 60 tokens and pads it to twice its real size.
    """
    order = sorted(range(len(lengths)), key=lambda j: lengths[j])
    batches: list[list[int]] = []
    shortest = 0
    for j in order:  # shortest first, so a batch's width is its last sequence's length
        n = lengths[j]
        if batches and (len(batches[-1]) + 1) * n <= batch_tokens and (n <= shortest * spread + 4 or len(batches[-1]) < min_batch):
            batches[-1].append(j)
        else:
            batches.append([j])
            shortest = n
    return batches


def first_tokens(offsets: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """(n_words,) index of each word's first sub-token (the first token overlapping it), -1 when none.

    offsets: (T, 2) character spans of the text's tokens (no special tokens); spans: (n_words, 2).
    """
    if len(spans) == 0:
        return np.zeros(0, dtype=np.int64)
    real = np.flatnonzero(offsets[:, 1] > offsets[:, 0])  # tokens that cover text
    if len(real) == 0:
        return np.full(len(spans), -1, dtype=np.int64)
    starts, ends = offsets[real, 0], np.maximum.accumulate(offsets[real, 1])
    k = np.searchsorted(ends, spans[:, 0], side="right")  # first token ending after the word's start
    k_safe = np.minimum(k, len(real) - 1)
    hit = (k < len(real)) & (starts[k_safe] < spans[:, 1])  # ... and starting before its end
    return np.where(hit, real[k_safe], -1)


class ZeroShotTagger:
    """Tag words of any text with any label names; see the module docstring for the scoring."""

    def __init__(
        self,
        model: DualEncoder,
        tokenizer,
        concept_tokenizer,
        settings: DualEncoderSettings,
        *,
        path: Path | None = None,
        device: str | torch.device = "auto",
        max_length: int | None = None,
        stride: int | None = None,
        batch_tokens: int = 8192,
        label_batch_size: int = 256,
        chunk_texts: int = 4096,
        precision: Literal["auto", "fp32", "bf16"] = "auto",
    ):
        if model.text_encoder.config.hidden_size != model.concept_encoder.config.hidden_size:
            raise ModelDirectoryError(
                f"{path or 'model'}: text encoder width {model.text_encoder.config.hidden_size} differs from the "
                f"concept encoder's {model.concept_encoder.config.hidden_size}"
            )
        if device == "auto":  # the GPU when there is one
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.concept_tokenizer = concept_tokenizer
        self.settings = settings
        self.path = path
        limit = position_limit(model.text_encoder.config, tokenizer)
        if max_length is not None and not 0 < max_length <= limit:
            raise ValueError(f"max_length must be between 1 and the text encoder's limit {limit}, not {max_length}")
        self.max_length = max_length or limit  # (tokens per window, special ones included)
        self.prefix, self.suffix = _special_frame(tokenizer)
        self.window = self.max_length - len(self.prefix) - len(self.suffix)  # content tokens per window
        if self.window < 1:
            raise ValueError(f"max_length {self.max_length} leaves no room beside {len(self.prefix) + len(self.suffix)} special tokens")
        self.stride = stride  # content tokens between window starts; None: half a window
        plan_windows(self.window + 1, self.window, stride)  # check the stride now, not on the first long text
        if batch_tokens < self.max_length:
            raise ValueError(f"batch_tokens {batch_tokens} must hold at least one full window ({self.max_length} tokens)")
        self.batch_tokens = batch_tokens
        self.label_batch_size = label_batch_size
        self.chunk_texts = chunk_texts
        self.bf16 = precision == "bf16" or (precision == "auto" and self.device.type == "cuda")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.concept_pad_id = concept_tokenizer.pad_token_id if concept_tokenizer.pad_token_id is not None else 0
        self.stats = TagStats()
        self._label_vectors: dict[str, torch.Tensor] = {}  # label -> (D,) fp32 concept vector, on device
        self._matrix: tuple[tuple[str, ...], torch.Tensor] | None = None  # the last label set, ready to score

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "auto", **options) -> ZeroShotTagger:
        """Load a model directory (see the module docstring); ``options`` go to the constructor."""
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
        self, texts: Sequence[str], labels: Sequence[str], threshold: float | None = None, progress: Progress | None = None
    ) -> list[list[Entity]]:
        """Entities of each text: words take their best label if p >= threshold, adjacent same-label words merge.

        ``threshold`` None: the model's stored threshold, else DEFAULT_THRESHOLD. Duplicate
        labels count once; labels are stripped. Offsets index the original text.
        """
        threshold = check_threshold(self.threshold if threshold is None else threshold)
        labels = clean_labels(labels)
        texts = _check_texts(texts)
        spans = [segment_words(t) for t in texts]
        best = self.best_labels(texts, spans, labels, progress)
        return [decode_entities(t, s, b, p, labels, threshold) for t, s, (b, p) in zip(texts, spans, best)]

    def best_labels(
        self, texts: Sequence[str], spans: Sequence[np.ndarray], labels: Sequence[str], progress: Progress | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text, ((n_words,) index into ``clean_labels(labels)`` of each word's best label, (n_words,) its probability).

        The argmax is taken on the device: thousands of labels cost no (words x labels) copy.
        A word without a token gets label 0 with probability 0.
        """
        texts = _check_texts(texts)
        if len(spans) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(spans)} span arrays")
        return self._run(texts, spans, clean_labels(labels), None, "best", progress)

    def predict_words(
        self, sentences: Sequence[Sequence[str]], labels: Sequence[str], progress: Progress | None = None
    ) -> list[np.ndarray]:
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
        texts = _check_texts(texts)
        if len(spans) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(spans)} span arrays")
        per_text = len(labels) > 0 and not isinstance(labels[0], str)
        if per_text:
            if len(labels) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(labels)} label lists")
            columns = [clean_and_keep(ls, allow_empty=True) for ls in labels]  # type: ignore[arg-type]
            union = clean_labels([label for ls in columns for label in ls]) if any(columns) else []
            return self._run(texts, spans, union, columns, "all", progress)
        given = clean_and_keep(labels)  # type: ignore[arg-type]
        unique = clean_labels(given)
        probs = self._run(texts, spans, unique, None, "all", progress)
        index = [unique.index(label.strip()) for label in given]
        return probs if index == list(range(len(unique))) else [p[:, index] for p in probs]

    def label_vectors(self, labels: Sequence[str]) -> torch.Tensor:
        """(C, D) fp32 concept vectors of ``labels`` (mean-pooled, not normalised), from the cache or one pass."""
        labels = clean_labels(labels)
        self._embed_missing(labels)
        return torch.stack([self._label_vectors[label] for label in labels])

    def clear_label_cache(self) -> None:
        self._label_vectors.clear()
        self._matrix = None

    # ------------------------------------------------------------------ text side

    def prepare(self, texts: Sequence[str], spans: Sequence[np.ndarray]) -> Plan:
        """Tokenise raw texts (no truncation), map words to first sub-tokens, cut windows, batch them."""
        stats = TagStats(texts=len(texts))
        encoded = self.tokenizer(
            list(texts), add_special_tokens=False, return_offsets_mapping=True,
            return_attention_mask=False, return_token_type_ids=False, verbose=False,
        )  # fmt: skip
        windows: list[_Window] = []
        prefix, suffix = np.asarray(self.prefix, dtype=np.int64), np.asarray(self.suffix, dtype=np.int64)
        for i, (ids, offsets) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"])):
            ids = np.asarray(ids, dtype=np.int64)
            first = first_tokens(np.asarray(offsets, dtype=np.int64).reshape(-1, 2), spans[i])  # (n_words,)
            stats.words += len(first)
            stats.words_without_token += int((first < 0).sum())
            cuts = plan_windows(len(ids), self.window, self.stride)
            stats.long_texts += len(cuts) > 1
            owner = best_window(len(ids), cuts)  # (T,) window of each token
            scored = np.flatnonzero(first >= 0)
            for w, (start, end) in enumerate(cuts):
                mine = scored[owner[first[scored]] == w]  # words whose first sub-token this window scores
                if len(mine) == 0:
                    continue  # nothing to score from it (an empty text, a window whose words others score)
                windows.append(_Window(i, np.concatenate([prefix, ids[start:end], suffix]), len(prefix) + first[mine] - start, mine))
        stats.windows = len(windows)
        stats.tokens = sum(len(w.ids) for w in windows)
        lengths = [len(w.ids) for w in windows]
        return Plan(windows, length_batches(lengths, self.batch_tokens), [len(s) for s in spans], self.pad_id, stats)

    def _encode(self, plan: Plan) -> Iterator[tuple[torch.Tensor, list[tuple[int, np.ndarray, int, int]]]]:
        """Per batch: (M, D) fp32 word vectors (normalised for cosine) and segments (text, words, row start, row end)."""
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        for batch in plan.batches:
            ids, mask = plan.tensors(batch)  # (B, T)
            with autocast:
                h = self.model.text_encoder(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state  # (B, T, D)
            rows = np.concatenate([np.full(len(plan.windows[j].positions), b) for b, j in enumerate(batch)])  # (M,)
            cols = np.concatenate([plan.windows[j].positions for j in batch])  # (M,)
            vectors = h[torch.from_numpy(rows).to(self.device), torch.from_numpy(cols).to(self.device)].float()  # (M, D)
            if self.settings.similarity == "cosine":
                vectors = F.normalize(vectors, dim=-1)
            segments, row = [], 0
            for j in batch:
                window = plan.windows[j]
                segments.append((window.text, window.words, row, row + len(window.words)))
                row += len(window.words)
            plan.stats.encoder_batches += 1
            yield vectors, segments

    # ------------------------------------------------------------------ label side

    def _embed_missing(self, labels: list[str]) -> None:
        """Concept vectors of the labels not in the cache: length-sorted batches, one forward pass each."""
        missing = [label for label in labels if label not in self._label_vectors]
        if not missing:
            return
        full = self.concept_tokenizer(missing)["input_ids"]  # as build_vocab: the name's first max_concept_length tokens
        cut = self.settings.max_concept_length
        long = [name for name, row in zip(missing, full) if len(row) > cut]
        if long:
            log.warning("%d label name(s) longer than %d tokens are cut to it, as pre-training cut concept names: %s",
                        len(long), cut, ", ".join(repr(x) for x in long[:5]))  # fmt: skip
            self.stats.labels_truncated += len(long)
        ids = self.concept_tokenizer(missing, truncation=True, max_length=cut)["input_ids"]
        order = sorted(range(len(missing)), key=lambda i: len(ids[i]))
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with torch.inference_mode():
            for lo in range(0, len(order), self.label_batch_size):
                part = order[lo : lo + self.label_batch_size]
                width = max(len(ids[i]) for i in part)
                c_ids = torch.full((len(part), width), self.concept_pad_id, dtype=torch.long)  # (C, L)
                c_mask = torch.zeros((len(part), width), dtype=torch.long)  # (C, L)
                for r, i in enumerate(part):
                    c_ids[r, : len(ids[i])] = torch.tensor(ids[i])
                    c_mask[r, : len(ids[i])] = 1
                c_ids, c_mask = c_ids.to(self.device), c_mask.to(self.device)
                with autocast:
                    hc = self.model.concept_encoder(input_ids=c_ids, attention_mask=c_mask).last_hidden_state  # (C, L, D)
                vectors = mean_pool(hc, c_mask).float()  # (C, D)
                for r, i in enumerate(part):
                    self._label_vectors[missing[i]] = vectors[r].clone()
                self.stats.concept_batches += 1
        self.stats.labels_encoded += len(missing)

    def _label_matrix(self, labels: list[str]) -> torch.Tensor:
        """(C, D) label vectors ready to score (normalised for cosine); the last label set is kept."""
        key = tuple(labels)
        if self._matrix is None or self._matrix[0] != key:
            self._embed_missing(labels)
            matrix = torch.stack([self._label_vectors[label] for label in labels])  # (C, D)
            if self.settings.similarity == "cosine":
                matrix = F.normalize(matrix, dim=-1)
            self._matrix = (key, matrix)
        return self._matrix[1]

    def _logits(self, vectors: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """(M, D) word vectors x (C, D) label vectors -> (M, C): tau*cos + b, or h.c/tau + b (both already prepared)."""
        scale = self.settings.temperature if self.settings.similarity == "cosine" else 1.0 / self.settings.temperature
        return torch.addmm(self.model.logit_bias.float().expand(1, 1), vectors, matrix.T, alpha=scale)

    # ------------------------------------------------------------------ the loop

    @torch.inference_mode()
    def _run(
        self,
        texts: list[str],
        spans: Sequence[np.ndarray],
        labels: list[str],
        columns: list[list[str]] | None,
        reduce: Literal["best", "all"],
        progress: Progress | None,
    ) -> list:
        """Score every word of every text against ``labels`` (or, with ``columns``, its own label list).

        reduce "best": per text ((n_words,) best label index, (n_words,) its probability), the
        argmax taken on the device so thousands of labels never leave it; "all": per text an
        (n_words, n_labels) probability array.
        """
        started = time.perf_counter()
        matrix = self._label_matrix(labels) if labels else None  # (C, D)
        index = {label: i for i, label in enumerate(labels)}
        text_columns = None if columns is None else [torch.tensor([index[c] for c in cs], dtype=torch.long, device=self.device) for cs in columns]
        out: list = []
        for lo in range(0, len(texts), self.chunk_texts):
            chunk_texts, chunk_spans = texts[lo : lo + self.chunk_texts], spans[lo : lo + self.chunk_texts]
            plan = self.prepare(chunk_texts, chunk_spans)
            width = [len(columns[lo + i]) if columns is not None else len(labels) for i in range(len(chunk_texts))]
            if reduce == "best":
                chunk: list = [(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float32)) for n in plan.n_words]
            else:
                chunk = [np.zeros((n, w), dtype=np.float32) for n, w in zip(plan.n_words, width)]
            for vectors, segments in self._encode(plan):
                if columns is None:
                    self._score_shared(vectors, segments, matrix, reduce, chunk)
                else:
                    for text, words, r0, r1 in segments:
                        cols = text_columns[lo + text]
                        if len(cols) and r1 > r0:
                            chunk[text][words] = torch.sigmoid(self._logits(vectors[r0:r1], matrix[cols])).cpu().numpy()
            out.extend(chunk)
            self._add_stats(plan.stats)
            if progress is not None:
                progress.update(lo + len(chunk_texts), len(texts), f"{self.stats.windows:,} windows")
        self.stats.seconds += time.perf_counter() - started
        return out

    def _score_shared(self, vectors, segments, matrix, reduce, chunk) -> None:
        """One batch against one label matrix, in row blocks that keep (rows x labels) bounded."""
        step = max(1, _MAX_LOGITS // max(1, matrix.shape[0]))
        parts = []
        for r in range(0, vectors.shape[0], step):
            logits = self._logits(vectors[r : r + step], matrix)  # (m, C)
            if reduce == "best":
                top, arg = logits.max(dim=1)
                parts.append((arg.cpu().numpy(), torch.sigmoid(top).cpu().numpy()))
            else:
                parts.append(torch.sigmoid(logits).cpu().numpy())
        if reduce == "best":
            best = np.concatenate([a for a, _ in parts]) if parts else np.zeros(0, dtype=np.int64)
            prob = np.concatenate([p for _, p in parts]) if parts else np.zeros(0, dtype=np.float32)
            for text, words, r0, r1 in segments:
                chunk[text][0][words] = best[r0:r1]
                chunk[text][1][words] = prob[r0:r1]
        else:
            probs = np.concatenate(parts) if parts else np.zeros((0, matrix.shape[0]), dtype=np.float32)
            for text, words, r0, r1 in segments:
                chunk[text][words] = probs[r0:r1]

    def _add_stats(self, stats: TagStats) -> None:
        for name in ("texts", "words", "words_without_token", "windows", "long_texts", "tokens", "encoder_batches"):
            setattr(self.stats, name, getattr(self.stats, name) + getattr(stats, name))


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string (wrap it: [text])")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is a {type(text).__name__}, not a string")
    return out


def _special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one text ([CLS] / [SEP], <s> / </s>)."""
    enc = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True)
    special = enc["special_tokens_mask"]
    content = [i for i, s in enumerate(special) if not s]
    if not content:
        raise ModelDirectoryError("the text tokenizer turns 'a' into special tokens only; cannot frame windows")
    ids = enc["input_ids"]
    return list(ids[: content[0]]), list(ids[content[-1] + 1 :])
