"""Words of raw text: the one word segmentation of ``nuner tag``, ``nuner predict``, calibration and fine-tuning.

A word is what the tagger labels, what a fine-tuned model reads one tag for, and what an
entity is made of. Models record the segmentation they were trained or calibrated with by
name (``SEGMENTATION``); change the rules and the name changes with them.

A word is, like BERT's pre-tokenisation (and the dataset stage's notion of a word boundary,
``nuner_core.dataset.align.is_word_char``):

- a run of word characters: letters, digits, ``_``, combining marks (``é`` written as
  ``e`` + U+0301, Devanagari vowel signs) and the zero-width (non-)joiners that sit inside
  Persian and Indic words;
- a single CJK ideograph (BERT tokenises each one apart; Chinese has no spaces), with the
  marks that follow it;
- any other single character that is not white space: ``.``, ``-``, ``'``, ``$``, an emoji.

White space (Unicode ``\\s``, plus the zero-width space, the word joiner and the byte-order
mark, which no tokenizer turns into a token) separates words and belongs to none.

Why split punctuation off (``Jean-Luc`` is three words, ``FBI's`` is three): the dataset
stage only accepts spans that start and end on word boundaries in this sense, so gold
spans are whole runs of these words; and pre-training made every sub-token *inside* a span
positive, hyphens and apostrophes included, so the model labels them and merging adjacent
same-label words joins ``Jean - Luc`` back into one entity.

Offsets are Python string (code point) offsets, end exclusive, like the dataset's spans and
the fast tokenizers' ``offset_mapping``.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import cache
from typing import Sequence

import numpy as np

# BERT's _is_chinese_char ranges: CJK Unified Ideographs and their extensions, compatibility ideographs.
SEGMENTATION = "nuner-words-1"  # the name models record (a fine-tuned model's settings file)

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002ceaf\U0002f800-\U0002fa1f"
_JOINERS = "\u200c\u200d"  # ZWNJ, ZWJ: inside words of Persian, Hindi, ...
_INVISIBLE = "\u200b\u2060\ufeff"  # zero-width space, word joiner, BOM: separators like white space


def _ranges(codepoints: list[int]) -> str:
    """A regex character-class body for sorted code points, as ranges."""
    parts: list[str] = []
    start = prev = -10
    for cp in codepoints + [-2]:
        if start >= 0 and cp == prev + 1:
            prev = cp
            continue
        if start >= 0:
            parts.append(re.escape(chr(start)) + ("-" + re.escape(chr(prev)) if prev > start else ""))
        start = prev = cp
    return "".join(parts)


@cache
def _word_pattern() -> re.Pattern[str]:
    """Built on first use (a scan of the Unicode table, about 0.2 s): ``re`` has no ``\\p{M}``."""
    marks = _ranges([cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] == "M"])
    word_run = rf"(?:[^\W{_CJK}]|[{marks}{_JOINERS}])+"  # word characters (ideographs excepted) and marks
    ideograph = rf"[{_CJK}][{marks}]*"
    other = rf"[^\s{_INVISIBLE}]"  # one non-space character: punctuation, a symbol, an emoji
    return re.compile(f"{ideograph}|{word_run}|{other}")


def segment_words(text: str) -> np.ndarray:
    """(n_words, 2) int64 character spans [start, end) of the words of ``text`` (see the module docstring)."""
    spans = [m.span() for m in _word_pattern().finditer(text)]
    return np.asarray(spans, dtype=np.int64).reshape(-1, 2)


def join_words(words: Sequence[str]) -> tuple[str, np.ndarray]:
    """Pre-split words as one text joined by single spaces, and each word's (n_words, 2) span in it.

    Benchmarks come tokenised; pre-training read raw text. Joining with spaces gives the text
    encoder raw text again (for byte-level BPE, RoBERTa's, the same sub-tokens as
    ``is_split_into_words`` with a prefix space) and keeps the given words as the unit.
    """
    spans = np.zeros((len(words), 2), dtype=np.int64)
    position = 0
    for i, word in enumerate(words):
        spans[i] = (position, position + len(word))
        position += len(word) + 1
    return " ".join(words), spans
