"""The text side of tagging, before the encoder: raw texts tokenised, words mapped to first sub-tokens, windows, batches.

The text is tokenised as raw text (as pre-training's ``encode`` did: no pre-splitting), and a
word is read at its first sub-token (the first token overlapping it). Texts longer than the
encoder's window are cut into windows of whole words (``nuner_core.text.windows``: the words
are the runs of tokens starting at each word's first sub-token); nothing is truncated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from nuner_core.tagging.settings import ModelDirectoryError
from nuner_core.text.windows import owners, plan_windows

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the ONNX backend plans texts without torch installed
    import torch

# Architectures whose position ids start after the padding index (RoBERTa's 514 positions hold 512 tokens).
Segment = tuple[int, np.ndarray, int, int]  # (text, its word indices, first row, end row) of a batch's word vectors
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "roberta-prelayernorm", "data2vec-text", "mpnet", "xmod", "ibert"}


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
    label_cache_hits: int = 0  # label names found in the label-vector cache
    labels_truncated: int = 0  # names longer than max_concept_length tokens: cut, as pre-training cut them
    seconds: float = 0.0

    def add_text_side(self, other: TagStats) -> None:
        """Add another's counts of texts, words, windows, tokens and encoder batches (a plan's, once scored)."""
        for name in ("texts", "words", "words_without_token", "windows", "long_texts", "tokens", "encoder_batches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Window:
    text: int  # index of the text in the chunk
    ids: np.ndarray  # (L,) token ids, special tokens included
    positions: np.ndarray  # (m,) positions in ``ids`` of the first sub-tokens of the words scored from this window
    words: np.ndarray  # (m,) the indices of those words in their text


@dataclass
class Plan:
    """Texts cut into windows and length-sorted batches of windows; public for the benchmark's bare forward pass."""

    windows: list[Window]
    batches: list[list[int]]  # window indices, shortest windows first
    n_words: list[int]  # per text
    pad_id: int
    stats: TagStats = field(default_factory=TagStats)

    def tensors(self, batch: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) input ids and attention mask of one batch."""
        import torch

        ids, mask = self.arrays(batch)
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def arrays(self, batch: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(B, T) int64 input ids and attention mask of one batch, as numpy arrays."""
        return pad_rows([self.windows[i].ids for i in batch], self.pad_id)

    def segments(self, batch: list[int]) -> tuple[np.ndarray, np.ndarray, list[Segment]]:
        """Where a batch's word vectors are: (M,) rows and (M,) positions in the (B, T) hidden states, and per window
        (text, its word indices, first row, end row) of the (M, D) word vectors gathered in that order."""
        rows = np.concatenate([np.full(len(self.windows[j].positions), b) for b, j in enumerate(batch)])  # (M,)
        cols = np.concatenate([self.windows[j].positions for j in batch])  # (M,)
        segments: list[Segment] = []
        row = 0
        for j in batch:
            window = self.windows[j]
            segments.append((window.text, window.words, row, row + len(window.words)))
            row += len(window.words)
        return rows, cols, segments


def pad_rows(rows: Sequence[Sequence[int] | np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, T) int64 ids padded with ``pad_id`` and the attention mask of token rows of any lengths."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = r
        mask[b, : len(r)] = 1
    return ids, mask


@dataclass(frozen=True)
class Framing:
    """How a window is built: the special tokens around it, its content tokens, the context carried between windows."""

    prefix: np.ndarray  # (p,) special token ids before the content ([CLS], <s>)
    suffix: np.ndarray  # (s,) after it ([SEP], </s>)
    window: int  # content tokens per window
    stride: int  # tokens of context a window carries over from the previous one


def position_limit(config: Any, tokenizer: Any) -> int:
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


def special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one text ([CLS] / [SEP], <s> / </s>)."""
    enc = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True)
    special = enc["special_tokens_mask"]
    content = [i for i, s in enumerate(special) if not s]
    if not content:
        raise ModelDirectoryError("the text tokenizer turns 'a' into special tokens only; cannot frame windows")
    ids = enc["input_ids"]
    return list(ids[: content[0]]), list(ids[content[-1] + 1 :])


def frame_windows(tokenizer: Any, limit: int, max_length: int | None, stride: int | None, batch_tokens: int) -> tuple[int, Framing]:
    """(tokens per window, special ones included; the framing) of a text encoder taking ``limit`` tokens; checked.

    ``stride`` None: half a window of context carried into the next window.
    """
    if max_length is not None and not 0 < max_length <= limit:
        raise ValueError(f"max_length must be between 1 and the text encoder's limit {limit}, not {max_length}")
    max_length = max_length or limit
    prefix, suffix = special_frame(tokenizer)
    window = max_length - len(prefix) - len(suffix)  # content tokens per window
    if window < 1:
        raise ValueError(f"max_length {max_length} leaves no room beside {len(prefix) + len(suffix)} special tokens")
    stride = window // 2 if stride is None else stride
    plan_windows([1, 1], window, stride)  # check the stride now, not on the first long text
    if batch_tokens < max_length:
        raise ValueError(f"batch_tokens {batch_tokens} must hold at least one full window ({max_length} tokens)")
    return max_length, Framing(np.asarray(prefix, dtype=np.int64), np.asarray(suffix, dtype=np.int64), window, stride)


def concept_token_ids(tokenizer: Any, names: list[str], cut: int, stats: TagStats) -> list[list[int]]:
    """Label names tokenised as pre-training's ``build_vocab`` tokenised concept names: the first ``cut`` tokens."""
    full = tokenizer(names)["input_ids"]
    long = [name for name, row in zip(names, full) if len(row) > cut]
    if long:
        log.warning("%d label name(s) longer than %d tokens are cut to it, as pre-training cut concept names: %s",
                    len(long), cut, ", ".join(repr(x) for x in long[:5]))  # fmt: skip
        stats.labels_truncated += len(long)
    return [list(row) for row in tokenizer(names, truncation=True, max_length=cut)["input_ids"]]


def concept_batches(ids: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices of label names in length-sorted batches of at most ``batch_size`` (one concept-encoder pass each)."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]


# What one encoder forward pass costs beside its (padded) tokens, in tokens: the batcher's price of one more batch.
# CPU, measured (MiniLM-L6, 1 torch thread, these 2 cores): a pass costs about 7.5 ms plus 0.19 ms per padded
# token, the fixed part being small-row matrix products over every weight; padding is the CPU's real cost.
# An accelerator's pass is launch-bound and padding nearly free: a larger price (not measured in this session).
CPU_FORWARD_TOKENS = 40
ACCELERATOR_FORWARD_TOKENS = 512


def forward_tokens(device_type: str) -> int:
    """The per-pass price ``length_batches`` uses on a device of this type ("cpu", "cuda", ...)."""
    return CPU_FORWARD_TOKENS if device_type == "cpu" else ACCELERATOR_FORWARD_TOKENS


def length_batches(lengths: Sequence[int], batch_tokens: int, pass_tokens: int = CPU_FORWARD_TOKENS) -> list[list[int]]:
    """Indices of sequences in length-sorted batches of at most ``batch_tokens`` padded tokens, the cheapest such split.

    The cost of a split is its padded tokens (batch size x its longest sequence) plus ``pass_tokens``
    per batch (``forward_tokens``); the cheapest split into runs of the length-sorted order is found
    exactly (dynamic programming over the sorted lengths, each run bounded by the budget). A few
    texts of spread lengths (a served request's) get the batches they need rather than one padded
    to the longest; thousands get batches of nearly equal lengths. A sequence longer than the
    budget still gets its own batch.
    """
    order = sorted(range(len(lengths)), key=lambda j: lengths[j])
    width = np.asarray([lengths[j] for j in order], dtype=np.int64)  # (n,) sorted
    cost = np.zeros(len(order) + 1)  # cost[i]: the cheapest split of the i shortest
    start = np.zeros(len(order) + 1, dtype=np.int64)  # where the last batch of that split starts
    lo = 0
    for i in range(1, len(order) + 1):
        w = int(width[i - 1])  # the longest of any batch ending at i
        while lo < i - 1 and (i - lo) * w > batch_tokens:
            lo += 1
        candidates = cost[lo:i] + pass_tokens + (i - np.arange(lo, i)) * w  # (i - lo,) a last batch from each start
        k = int(np.argmin(candidates))
        cost[i], start[i] = candidates[k], lo + k
    batches: list[list[int]] = []
    i = len(order)
    while i > 0:
        batches.append(order[int(start[i]) : i])
        i = int(start[i])
    return batches[::-1]


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
    hit = (k < len(real)) & (starts[k_safe] < spans[:, 1])
    return np.where(hit, real[k_safe], -1)


def text_windows(text: int, ids: np.ndarray, first: np.ndarray, framing: Framing) -> list[Window]:
    """The windows of one tokenised text (``ids`` (T,)) that score its words (``first`` (n_words,): first sub-tokens, -1 none).

    Words sharing a first sub-token (a token spanning ``'t``) are one unit; a unit runs from its
    first sub-token to the next unit's (the first one from the text's start).
    """
    scored = np.flatnonzero(first >= 0)
    if len(scored) == 0:
        return []  # nothing to score (an empty text, only words without a token)
    starts, unit_of = np.unique(first[scored], return_inverse=True)  # distinct first sub-tokens; each word's unit
    lo = starts.copy()
    if starts[0] < framing.window:  # tokens before the first word (white space) stay, unless they alone overflow a window
        lo[0] = 0
    hi = np.append(starts[1:], len(ids))
    cuts = plan_windows((hi - lo).tolist(), framing.window, framing.stride)
    owner = np.asarray(owners((hi - lo).tolist(), cuts), dtype=np.int64)[unit_of]  # (n_scored,) window of each word
    out = []
    for w, (a, b) in enumerate(cuts):
        mine = scored[owner == w]  # words whose first sub-token this window scores
        if len(mine) == 0:
            continue  # a window whose words others score
        start = int(lo[a])
        content = ids[start : min(int(hi[b - 1]), start + framing.window)]
        out.append(Window(text, np.concatenate([framing.prefix, content, framing.suffix]), len(framing.prefix) + first[mine] - start, mine))
    return out


def plan_texts(
    tokenizer: Any, texts: Sequence[str], spans: Sequence[np.ndarray], framing: Framing, batch_tokens: int, pad_id: int,
    pass_tokens: int = CPU_FORWARD_TOKENS,
) -> Plan:  # fmt: skip
    """Tokenise raw texts (no truncation), map words to first sub-tokens, cut windows, batch them (``length_batches``)."""
    stats = TagStats(texts=len(texts))
    encoded = tokenizer(
        list(texts), add_special_tokens=False, return_offsets_mapping=True,
        return_attention_mask=False, return_token_type_ids=False, verbose=False,
    )  # fmt: skip
    windows: list[Window] = []
    for i, (ids, offsets) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"])):
        first = first_tokens(np.asarray(offsets, dtype=np.int64).reshape(-1, 2), spans[i])  # (n_words,)
        stats.words += len(first)
        stats.words_without_token += int((first < 0).sum())
        mine = text_windows(i, np.asarray(ids, dtype=np.int64), first, framing)
        stats.long_texts += len(mine) > 1
        windows += mine
    stats.windows = len(windows)
    stats.tokens = sum(len(w.ids) for w in windows)
    lengths = [len(w.ids) for w in windows]
    return Plan(windows, length_batches(lengths, batch_tokens, pass_tokens), [len(s) for s in spans], pad_id, stats)


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list, each checked to be a string (one string alone is refused, not read as characters)."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string (wrap it: [text])")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is a {type(text).__name__}, not a string")
    return out
