"""Reading an LLM's answer to the prompt of protocol "llm" (``llm_prompt.py``) as IOB2 tags of the test sentence.

**Parsing** (:func:`parse_answer`): lines are read one by one; bullets, numbering, code
fences are stripped, and quotes around a mention unless they are among the sentence's words. A line without ``<>`` (or with an empty side) is a bad
line; a type is matched exactly, else ignoring case, spaces, ``_`` and ``-``, else the
line is dropped as ``unknown_type``. A mention is found in the sentence's words exactly,
else ignoring case, else ignoring spaces (``Joe's`` for ``Joe 's``); not found, it is
dropped as ``not_in_sentence``. Listings are placed in answer order (the prompt asks for
the sentence's order), each on its mention's first free occurrence after the previous
listing, else its first free one: a mention listed twice takes two occurrences
(``repeated`` counts the second and later, each with its own type: "good <> Rating",
"good <> Price"); a listing beyond the occurrences is ignored (``extra_listings``: a
duplicate line), an occurrence beyond the listings stays untagged (``occurrences_left``),
a listing whose free occurrences all lie inside mentions already placed is dropped
(``overlapping``: "burger" when "burger king" took its only occurrence). An empty answer is scored as no entity (``empty``); an answer with no
usable line at all is ``unparsable`` and scored as no entity. Every one of these is counted, per cell, in the manifest and in
``llm_answers.parquet`` (one row per test sentence and cell, raw answer included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)])\s+")
_FENCE = re.compile(r"^\s*```")
_NONE_ANSWER = re.compile(r"^\W*(none|no entities?)\W*$", re.IGNORECASE)
_QUOTES = "\"'`“”‘’"


@dataclass
class ParseStats:
    answers: int = 0  # answers parsed (one per scored test sentence)
    none: int = 0  # answered NONE: no entity
    empty: int = 0  # empty answers: scored as no entity
    unparsable: int = 0  # non-empty answers without one usable "mention <> type" line: scored as no entity
    truncated: int = 0  # answers cut at max_tokens, parsed as far as they go
    lines: int = 0  # non-blank answer lines (NONE and code fences excluded)
    bad_lines: int = 0  # lines without "<>", or with an empty mention or type: ignored
    unknown_type: int = 0  # lines whose type is not among the listed ones: dropped
    type_normalised: int = 0  # types matched ignoring case, spaces, "_" and "-" ("restaurant name" for Restaurant_Name)
    not_in_sentence: int = 0  # mentions whose words are not in the sentence: dropped
    case_insensitive: int = 0  # mentions found in the sentence only ignoring case
    spacing: int = 0  # mentions found only ignoring spaces ("Joe's" for "Joe 's")
    extra_listings: int = 0  # a mention listed more often than its words occur (a duplicate line): ignored
    overlapping: int = 0  # listings whose free occurrences all overlap a longer mention already placed: dropped
    mentions: int = 0  # distinct mentions placed on the sentence's words
    repeated: int = 0  # a mention's second, third... listing placed on its next occurrence
    occurrences_left: int = 0  # occurrences of a listed mention beyond its listings: left untagged

    def add(self, other: "ParseStats") -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def _type_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).casefold()


def _find(tokens: Sequence[str], mention: str) -> tuple[list[tuple[int, int]], str]:
    """Every (start, end) of ``mention`` in ``tokens`` and how it was matched: exact, case, spacing or ''."""
    words = mention.split()
    n = len(words)
    if n == 0:
        return [], ""
    exact = [(i, i + n) for i in range(len(tokens) - n + 1) if list(tokens[i:i + n]) == words]
    if exact:
        return exact, "exact"
    lowered = [w.casefold() for w in words]
    folded = [(i, i + n) for i in range(len(tokens) - n + 1) if [t.casefold() for t in tokens[i:i + n]] == lowered]
    if folded:
        return folded, "case"
    target = "".join(lowered)
    spaced = []
    for i in range(len(tokens)):
        joined = ""
        for j in range(i, len(tokens)):
            joined += tokens[j].casefold()
            if len(joined) >= len(target):
                if joined == target:
                    spaced.append((i, j + 1))
                break
    return spaced, "spacing" if spaced else ""


def parse_answer(answer: str, tokens: Sequence[str], types: Sequence[str],
                 finish_reason: str | None = None) -> tuple[tuple[str, ...], ParseStats]:
    """IOB2 tags for ``tokens`` from an LLM answer, and what the parser met; never raises."""
    stats = ParseStats(answers=1, truncated=int(finish_reason == "length"))
    tags = ["O"] * len(tokens)
    text = answer.strip()
    if not text:
        stats.empty = 1
        return tuple(tags), stats
    if _NONE_ANSWER.match(text):
        stats.none = 1
        return tuple(tags), stats
    by_key = {_type_key(t): t for t in types}
    listings: list[tuple[str, str]] = []  # (mention, type) in answer order
    found: dict[str, list[tuple[int, int]]] = {}  # mention -> its occurrences in the sentence
    usable = none_lines = 0
    for raw in text.splitlines():
        if _NONE_ANSWER.match(raw):
            none_lines += 1
            continue
        if not raw.strip() or _FENCE.match(raw):
            continue
        stats.lines += 1
        line = _BULLET.sub("", raw).strip()
        if "<>" not in line:
            stats.bad_lines += 1
            continue
        mention, _, rest = line.partition("<>")
        type_name = rest.split("<>")[0].strip().strip(_QUOTES + " .,;")
        mention = " ".join(mention.split())
        if mention.strip(_QUOTES) != mention and not _find(tokens, mention)[0]:
            mention = " ".join(mention.strip(_QUOTES).split())  # quoted by the LLM, not part of the words
        if not mention or not type_name:
            stats.bad_lines += 1
            continue
        usable += 1
        if type_name in types:
            type_ = type_name
        elif _type_key(type_name) in by_key:
            type_ = by_key[_type_key(type_name)]
            stats.type_normalised += 1
        else:
            stats.unknown_type += 1
            continue
        if mention not in found:
            spans, how = _find(tokens, mention)
            found[mention] = spans
            stats.case_insensitive += how == "case"
            stats.spacing += how == "spacing"
        if not found[mention]:
            stats.not_in_sentence += 1
            continue
        listings.append((mention, type_))
    if usable == 0:
        if stats.lines == 0 and none_lines:  # NONE, fenced or repeated
            stats.none = 1
        else:
            stats.unparsable = 1
        return tuple(tags), stats
    # In answer order (the prompt asks for the sentence's order): each listing takes its mention's first free
    # occurrence at or after the previous listing's end, else its first free one anywhere.
    taken = [False] * len(tokens)
    used: dict[str, list[tuple[int, int]]] = {}
    cursor = 0
    for mention, type_ in listings:
        mine = used.setdefault(mention, [])
        unused = [span for span in found[mention] if span not in mine]
        free = [span for span in unused if not any(taken[span[0]:span[1]])]
        if not free:
            if unused:
                stats.overlapping += 1  # its remaining occurrences lie inside mentions already placed
            else:
                stats.extra_listings += 1  # listed more often than the words occur
            continue
        start, end = next((span for span in free if span[0] >= cursor), free[0])
        for i in range(start, end):
            taken[i] = True
            tags[i] = ("B-" if i == start else "I-") + type_
        stats.mentions += not mine
        stats.repeated += bool(mine)
        mine.append((start, end))
        cursor = end
    stats.occurrences_left = sum(1 for mention, spans in found.items() if mention in used
                                 for span in spans if span not in used[mention] and not any(taken[span[0]:span[1]]))
    return tuple(tags), stats
