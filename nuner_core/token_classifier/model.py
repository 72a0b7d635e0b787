"""The token classifier and its inputs: windows of words, first-sub-token labels, the loss, word-level prediction.

The model is the whole encoder plus a head over IOB2 labels: by default
``AutoModelForTokenClassification`` (a linear head), so the exported directory is a plain
``transformers`` model; or a two-layer head (``MlpHeadTagger``, the evaluation's protocol).
Each word's *first* sub-token carries its label; its other sub-tokens, the special tokens and
the words a window does not own (see ``nuner_core.text.windows.owners``) are labelled -100 and ignored by the loss.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nuner_core.text.windows import owners, plan_windows

IGNORE = -100


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No per-load progress bars and no "newly initialised weights" warnings (the head is new by design)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


class MlpHeadTagger(torch.nn.Module):
    """Encoder + dropout -> Linear(D, H) -> GELU -> dropout -> Linear(H, L), called like a ``transformers`` token classifier."""

    def __init__(self, encoder: Any, n_labels: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        width = encoder.config.hidden_size
        self.head = torch.nn.Sequential(
            torch.nn.Dropout(dropout), torch.nn.Linear(width, hidden), torch.nn.GELU(), torch.nn.Dropout(dropout), torch.nn.Linear(hidden, n_labels)
        )

    @property
    def base_model(self) -> Any:
        """The encoder (named as ``transformers`` models name it: what gets the encoder's learning rate)."""
        return self.encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        from transformers.modeling_outputs import TokenClassifierOutput

        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        return TokenClassifierOutput(logits=self.head(states))  # logits (B, T, L)


def build_model(
    location: str, labels: Sequence[str], seed: int, dropout: float | None = None, head_hidden: int | None = None,
    init_seed: int | None = None,
) -> Any:  # fmt: skip
    """Encoder weights from ``location`` plus a fresh head initialised from ``seed``.

    ``head_hidden``: None, ``AutoModelForTokenClassification``'s linear head (``dropout``: its
    classifier dropout, None: the encoder config's); else a two-layer head of that width.
    ``init_seed``: the encoder's weights freshly initialised from that seed instead (same
    architecture and tokenizer: a sanity floor); with the linear head, the head too.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification

    with quiet_transformers():
        if head_hidden is not None:
            if dropout is None:
                raise ValueError("a two-layer head needs its dropout")
            if init_seed is not None:
                torch.manual_seed(init_seed)
                encoder = AutoModel.from_config(AutoConfig.from_pretrained(location))  # type: ignore[no-untyped-call]
            else:
                encoder = AutoModel.from_pretrained(location)
            torch.manual_seed(seed)
            return MlpHeadTagger(encoder, len(labels), head_hidden, dropout)
        options: dict[str, Any] = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                                   "label2id": {label: i for i, label in enumerate(labels)}}  # fmt: skip
        if dropout is not None:
            options["classifier_dropout"] = dropout
        if init_seed is not None:
            torch.manual_seed(init_seed)
            return AutoModelForTokenClassification.from_config(AutoConfig.from_pretrained(location, **options))  # type: ignore[no-untyped-call]
        torch.manual_seed(seed)
        return AutoModelForTokenClassification.from_pretrained(location, **options)


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over labelled positions of ``-log softmax(logits)[label]``; positions labelled -100 are ignored.

    ``logits`` (B, T, L), ``labels`` (B, T).
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE)


@dataclass
class Window:
    """One model input: a run of a sentence's words, and where its owned words' first sub-tokens are."""

    sentence: int  # index of the sentence (or text) it belongs to
    input_ids: list[int]  # (T,) with special tokens
    positions: list[int]  # (W,) first sub-token position of each owned word
    words: list[int]  # (W,) sentence word index of each owned word
    labels: list[int] | None = None  # (T,) label ids at owned first sub-tokens, -100 elsewhere


@dataclass
class EncodeCounts:
    sentences: int = 0
    windows: int = 0
    split_sentences: int = 0  # sentences longer than one window (covered by several, overlapping)
    words_without_subtokens: int = 0  # the tokenizer yields nothing for them: never labelled, predicted O
    words_cut: int = 0  # single words longer than a window: sub-tokens beyond it cut (the first one is kept)
    words_unread: int = 0  # words whose sub-tokens a window's encoding lost (tokenizer disagreeing with itself): predicted O

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def encode_windows(
    tokenizer: Any, sentences: Sequence[Sequence[str]], max_length: int, stride: int,
    tag_ids: Sequence[Sequence[int]] | None = None, counts: EncodeCounts | None = None,
) -> list[Window]:  # fmt: skip
    """Windows of every sentence (words, already split); with ``tag_ids``, training labels too."""
    counts = counts if counts is not None else EncodeCounts()
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    out: list[Window] = []
    if not sentences:
        return out
    pieces = tokenizer([list(s) for s in sentences], is_split_into_words=True, add_special_tokens=False)
    for index, words in enumerate(sentences):
        sub = np.bincount([w for w in pieces.word_ids(index) if w is not None], minlength=len(words)).tolist()
        windows = plan_windows(sub, budget, stride)
        owner = owners(sub, windows)
        counts.sentences += 1
        counts.windows += len(windows)
        counts.split_sentences += len(windows) > 1
        counts.words_without_subtokens += sum(1 for c in sub if c == 0)
        counts.words_cut += sum(1 for c in sub if c > budget)
        for w, (a, b) in enumerate(windows):
            enc = tokenizer(list(words[a:b]), is_split_into_words=True, truncation=True, max_length=max_length)
            first: dict[int, int] = {}
            for position, word in enumerate(enc.word_ids()):
                if word is not None and word + a not in first:
                    first[word + a] = position
            mine = [i for i in range(a, b) if owner[i] == w and sub[i] > 0]
            owned = [i for i in mine if i in first]
            counts.words_unread += len(mine) - len(owned)
            window = Window(index, list(enc["input_ids"]), [first[i] for i in owned], owned)
            if tag_ids is not None:
                window.labels = [IGNORE] * len(window.input_ids)
                for i, p in zip(owned, window.positions):
                    window.labels[p] = tag_ids[index][i]
            out.append(window)
    return out


def collate(windows: Sequence[Window], pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """input_ids, attention_mask (B, T) and, when the windows carry them, labels (B, T); right-padded."""
    width = max(len(w.input_ids) for w in windows)
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    labels = torch.full((len(windows), width), IGNORE, dtype=torch.long) if windows[0].labels is not None else None
    for row, w in enumerate(windows):
        ids[row, : len(w.input_ids)] = torch.tensor(w.input_ids)
        mask[row, : len(w.input_ids)] = 1
        if labels is not None:
            labels[row, : len(w.labels)] = torch.tensor(w.labels)  # type: ignore[arg-type]
    batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if labels is not None:
        batch["labels"] = labels.to(device)
    return batch


@dataclass
class WordPredictions:
    """Per sentence, per word: the predicted label id and its probability (``-1`` / 0.0 for a word never read)."""

    label_ids: list[list[int]]
    scores: list[list[float]]
    loss: float | None = None  # mean token loss over labelled positions, when the windows carry labels
    extra: dict[str, Any] = field(default_factory=dict)


@torch.inference_mode()
def predict_words(model: Any, windows: Sequence[Window], sentence_lengths: Sequence[int], pad_id: int, batch_size: int) -> WordPredictions:
    """Run the model over the windows (similar lengths batched together) and read each owned word's first sub-token."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    label_ids = [[-1] * n for n in sentence_lengths]
    scores = [[0.0] * n for n in sentence_lengths]
    loss_sum, loss_n = 0.0, 0
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
    for start in range(0, len(order), batch_size):
        chunk = [windows[i] for i in order[start : start + batch_size]]
        batch = collate(chunk, pad_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()  # (B, T, L)
        if "labels" in batch:
            n = int((batch["labels"] != IGNORE).sum())
            if n:
                loss_sum += float(token_loss(logits, batch["labels"])) * n
                loss_n += n
        probs = logits.softmax(-1).cpu().numpy()  # (B, T, L)
        for row, w in enumerate(chunk):
            for word, position in zip(w.words, w.positions):
                best = int(probs[row, position].argmax())
                label_ids[w.sentence][word] = best
                scores[w.sentence][word] = float(probs[row, position, best])
    model.train(was_training)
    return WordPredictions(label_ids, scores, loss_sum / loss_n if loss_n else None)

