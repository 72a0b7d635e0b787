"""Locate each annotated entity in its sentence by exact string match (paper §3.1).

LLMs cannot count characters, so offsets are found, not asked for: every occurrence of the
entity in its sentence is a span, case-sensitive; a match must not start or end inside a
word (``art`` is not found in ``start``; ``FBI`` is found in ``FBI's``). Spans of different
entities may overlap or nest (``FBI`` inside ``FBI's Counterterrorism Division``): all are
kept. Optionally, an entity with no exact match is searched again ignoring case; such
matches are counted apart. Each parsed line gets one status:

    exact        found at least once, case-sensitive
    casefold     found only ignoring case (with ``case_insensitive_fallback``)
    inside_word  the string occurs, but only inside words
    absent       the string does not occur

A line's search stops after ``MAX_MATCHES_PER_LINE`` matches (at word boundaries or not): a
short entity repeated through a long sentence would otherwise cost a pass per occurrence and a
span each; such lines are ``capped`` (counted by the stage), keeping the spans found so far.

Offsets are Python string (code point) offsets, end exclusive. ``align`` is vectorised
(polars finds, numpy checks boundaries on UTF-8 bytes); ``find_occurrences`` is the
reference implementation, used for the few undecidable lines and the case-insensitive
fallback, and a test checks the two agree.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from polars import CompatLevel

STATUSES = ("exact", "casefold", "inside_word", "absent")
MAX_MATCHES_PER_LINE = 1_000  # an ordinary sentence holds an entity a few times
# Vectorised passes before the lines still matching go to the reference: each pass slices every such
# line from its last match, so k passes over a line of length L cost O(k L) (quadratic when the
# matches follow the length); the reference's str.find walks a line once.
VECTOR_PASSES = 8
_EXACT, _CASEFOLD, _INSIDE, _ABSENT = range(4)
# What ``str.find`` counts: polars up to 2.1 returns a byte offset, 2.2 a character offset ("é b" -> 3 or 2).
_FIND_IN_CHARS = pl.Series(["\u00e9 b"]).str.find("b", literal=True).item() == 2

# ASCII bytes that are word characters: letters, digits, underscore (what str.isalnum() says for ASCII).
_WORD_BYTE = np.zeros(256, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_":
    _WORD_BYTE[_c] = True


def is_word_char(c: str) -> bool:
    """Letters, digits, underscore and combining marks belong to words."""
    return c.isalnum() or c == "_" or (c > "\x7f" and unicodedata.category(c)[0] == "M")


def _clean_boundaries(text: str, start: int, end: int) -> bool:
    """False when the match starts or ends inside a word."""
    if start > 0 and is_word_char(text[start - 1]) and is_word_char(text[start]):
        return False
    if end < len(text) and is_word_char(text[end - 1]) and is_word_char(text[end]):
        return False
    return True


def find_occurrences(text: str, entity: str, ignore_case: bool = False) -> tuple[list[tuple[int, int]], bool]:
    """All occurrences of ``entity`` in ``text`` that respect word boundaries.

    Returns ``(spans, seen)``: ``spans`` as (start, end) code-point offsets in order,
    ``seen`` whether the string occurs at all (possibly only inside words).
    """
    spans, seen, _ = _find(text, entity, ignore_case, None)
    return spans, seen


def _find(text: str, entity: str, ignore_case: bool, limit: int | None) -> tuple[list[tuple[int, int]], bool, bool]:
    """``find_occurrences``, stopping after ``limit`` matches; the third value: whether it stopped there."""
    spans: list[tuple[int, int]] = []
    matches = 0
    if not entity:
        return spans, False, False
    pattern = re.compile(re.escape(entity), re.IGNORECASE) if ignore_case else None
    pos = 0
    while limit is None or matches < limit:
        if pattern is not None:
            m = pattern.search(text, pos)
            if m is None:
                break
            start, end = m.start(), m.end()
        else:
            start = text.find(entity, pos)
            if start < 0:
                break
            end = start + len(entity)
        matches += 1
        if end > start and _clean_boundaries(text, start, end):
            spans.append((start, end))
        pos = start + 1
    return spans, matches > 0, limit is not None and matches >= limit


@dataclass
class Alignment:
    spans: pl.DataFrame  # one row per occurrence: row u32 (index into the parsed lines), start i32, end i32
    status: np.ndarray  # (P,) int8, index into STATUSES, one per parsed line
    occurrences: np.ndarray  # (P,) int32, spans found per parsed line
    capped: np.ndarray  # (P,) bool: the search stopped at MAX_MATCHES_PER_LINE


def _utf8_buffers(series: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (N+1,) int64, data bytes) of a string column."""
    arr = series.fill_null("").to_arrow(compat_level=CompatLevel.oldest())
    if hasattr(arr, "combine_chunks"):
        arr = arr.combine_chunks()
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(1, dtype=np.uint8)
    return offsets, data


def _char_len(lead: np.ndarray) -> np.ndarray:
    """Bytes of the UTF-8 character starting with byte ``lead``."""
    return 1 + (lead >= 0xC0) + (lead >= 0xE0) + (lead >= 0xF0)


def align(sid: np.ndarray, entity: pl.Series, texts: pl.Series, case_insensitive_fallback: bool = False) -> Alignment:
    """Find every parsed entity in its sentence.

    ``sid`` (P,) indexes ``texts`` (S,) for each entity (P,). Returns spans and per-line status.

    Vectorised: polars finds the next occurrence of each entity (byte offset), numpy converts it to a
    character offset (minus the UTF-8 continuation bytes before it) and checks the word boundaries on the neighbouring bytes. A boundary that involves a
    non-ASCII character cannot be decided from one byte: such lines go, whole, to
    ``find_occurrences`` (the reference), as do the case-insensitive retries.
    """
    n = len(entity)
    status = np.full(n, _ABSENT, dtype=np.int8)
    occurrences = np.zeros(n, dtype=np.int32)
    if n == 0:
        return Alignment(_spans_frame([], [], []), status, occurrences, np.zeros(0, dtype=bool))
    sid = sid.astype(np.int64)
    t_off, t_data = _utf8_buffers(texts)  # (S+1,), (bytes,)
    e_off, e_data = _utf8_buffers(entity)  # (P+1,), (bytes,)
    # continuation[i]: UTF-8 continuation bytes in t_data[:i]; char offset = byte offset - continuations before it.
    continuation = np.zeros(len(t_data) + 1, dtype=np.int64)
    np.cumsum((t_data >= 0x80) & (t_data < 0xC0), out=continuation[1:])
    char_starts = np.flatnonzero((t_data < 0x80) | (t_data >= 0xC0))  # byte offset of every character, in order
    e_bytes = e_off[1:] - e_off[:-1]  # (P,)
    e_chars = entity.str.len_chars().to_numpy().astype(np.int64)  # (P,)
    e_first = e_data[np.minimum(e_off[:-1], len(e_data) - 1)]
    e_last = e_data[np.maximum(e_off[1:] - 1, 0)]
    # Word-ness of the entity's edge characters: 1 word, 0 not, -1 undecidable from one byte.
    e_first_word = np.where(e_first < 0x80, _WORD_BYTE[e_first], -1)
    e_last_word = np.where(e_last < 0x80, _WORD_BYTE[e_last], -1)
    t_len = t_off[1:] - t_off[:-1]

    rows = np.arange(n)
    frame = pl.DataFrame({"t": texts.gather(sid), "e": entity})
    from_char = np.zeros(n, dtype=np.int64)
    from_byte = np.zeros(n, dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    deferred = np.zeros(n, dtype=bool)
    matches = np.zeros(n, dtype=np.int64)  # matches examined per line, at word boundaries or not
    capped = np.zeros(n, dtype=bool)
    span_rows: list[np.ndarray] = []
    span_starts: list[np.ndarray] = []
    span_ends: list[np.ndarray] = []
    passes = 0  # vectorised passes done
    while rows.size:
        if passes == VECTOR_PASSES:  # the lines with more matches than that, whole, to the reference
            deferred[rows] = True
            break
        found_at = _next_occurrence(frame, from_char if passes else None)
        hit = found_at.is_not_null().to_numpy()
        if not hit.all():
            rows, from_byte, from_char, frame = rows[hit], from_byte[hit], from_char[hit], frame.filter(pl.Series(hit))
            found_at = found_at.filter(pl.Series(hit))
        if not rows.size:
            break
        base = t_off[sid[rows]]
        found = found_at.to_numpy().astype(np.int64)
        if _FIND_IN_CHARS:  # the character offset in the sentence -> its byte offset (the k-th character from base)
            first_char = (from_char if passes else 0) + found
            start_b = char_starts[base - continuation[base] + first_char] - base
        else:
            start_b = from_byte + found  # byte offsets in the sentence
        end_b = start_b + e_bytes[rows]
        start = start_b - (continuation[base + start_b] - continuation[base])  # character offsets
        end = start + e_chars[rows]
        before = t_data[np.maximum(base + start_b - 1, 0)]
        after = t_data[np.minimum(base + end_b, len(t_data) - 1)]
        before_word = np.where(start_b > 0, np.where(before < 0x80, _WORD_BYTE[before], -1), 0)
        after_word = np.where(end_b < t_len[sid[rows]], np.where(after < 0x80, _WORD_BYTE[after], -1), 0)
        bad_start = _both_word(before_word, e_first_word[rows])
        bad_end = _both_word(e_last_word[rows], after_word)
        unsure = (bad_start < 0) | (bad_end < 0)
        if unsure.any():  # hand the whole line to the reference implementation
            deferred[rows[unsure]] = True
            keep = ~unsure
            rows, from_byte, frame = rows[keep], from_byte[keep], frame.filter(pl.Series(keep))
            start_b, start, end, bad_start, bad_end = start_b[keep], start[keep], end[keep], bad_start[keep], bad_end[keep]
            base = base[keep]
        ok = (bad_start == 0) & (bad_end == 0)
        seen[rows] = True
        occurrences[rows[ok]] += 1  # rows are distinct within one pass
        span_rows.append(rows[ok])
        span_starts.append(start[ok])
        span_ends.append(end[ok])
        from_char = start + 1
        from_byte = start_b + _char_len(t_data[np.minimum(base + start_b, len(t_data) - 1)])
        matches[rows] += 1
        full = matches[rows] >= MAX_MATCHES_PER_LINE
        if full.any():  # stop searching these lines: they keep the spans found so far
            capped[rows[full]] = True
            keep = ~full
            rows, from_byte, from_char, frame = rows[keep], from_byte[keep], from_char[keep], frame.filter(pl.Series(keep))
        passes += 1
    status[seen] = _INSIDE
    status[occurrences > 0] = _EXACT

    span_rows, span_starts, span_ends = _reference_passes(
        sid, entity, texts, deferred, case_insensitive_fallback, status, occurrences, capped, span_rows, span_starts, span_ends
    )
    return Alignment(_spans_frame(span_rows, span_starts, span_ends), status, occurrences, capped)


def _next_occurrence(frame: pl.DataFrame, from_char: np.ndarray | None) -> pl.Series:
    """Per row, the offset of the entity ``e`` in the sentence ``t`` from character ``from_char`` on (None: from the start), or null."""
    if from_char is None:
        return frame.select(pl.col("t").str.find(pl.col("e"), literal=True)).to_series()
    return frame.with_columns(o=pl.Series(from_char)).select(pl.col("t").str.slice(pl.col("o")).str.find(pl.col("e"), literal=True)).to_series()


def _reference_passes(
    sid: np.ndarray, entity: pl.Series, texts: pl.Series, deferred: np.ndarray, case_insensitive_fallback: bool,
    status: np.ndarray, occurrences: np.ndarray, capped: np.ndarray,
    span_rows: list[np.ndarray], span_starts: list[np.ndarray], span_ends: list[np.ndarray],
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The lines the vectorised pass could not decide, redone whole by ``find_occurrences``; then,
    if asked, the case-insensitive retry of the lines still without a match. Updates ``status``
    and ``occurrences`` in place; returns the span lists (the deferred lines' spans replaced)."""
    if deferred.any():
        spans = _spans_frame(span_rows, span_starts, span_ends)
        spans = spans.filter(~pl.Series(deferred[spans["row"].to_numpy()]))
        span_rows, span_starts, span_ends = [spans["row"].to_numpy()], [spans["start"].to_numpy()], [spans["end"].to_numpy()]
        slow = np.flatnonzero(deferred)
        status[slow] = _ABSENT
        occurrences[slow] = 0
        capped[slow] = False
        _python_pass(
            slow, texts.gather(sid[slow]).to_list(), entity.gather(slow).to_list(), False, _EXACT,
            status, occurrences, capped, span_rows, span_starts, span_ends,
        )  # fmt: skip

    if case_insensitive_fallback:
        missing = np.flatnonzero(occurrences == 0)
        if missing.size:
            _python_pass(
                missing, texts.gather(sid[missing]).to_list(), entity.gather(missing).to_list(), True, _CASEFOLD,
                status, occurrences, capped, span_rows, span_starts, span_ends,
            )  # fmt: skip

    return span_rows, span_starts, span_ends


def _both_word(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 when both characters are word characters, 0 when either is not, -1 when undecidable."""
    return np.where((a == 0) | (b == 0), 0, np.where((a == 1) & (b == 1), 1, -1))


def _python_pass(
    rows: np.ndarray,
    texts: list[str],
    entities: list[str],
    ignore_case: bool,
    found_status: int,
    status: np.ndarray,
    occurrences: np.ndarray,
    capped: np.ndarray,
    span_rows: list[np.ndarray],
    span_starts: list[np.ndarray],
    span_ends: list[np.ndarray],
) -> None:
    """``find_occurrences`` for the given ``rows`` (up to MAX_MATCHES_PER_LINE matches each): sets their
    ``status``, ``occurrences`` and ``capped`` in place
    and appends their spans to ``span_rows`` / ``span_starts`` / ``span_ends``."""
    out_rows: list[int] = []
    out_starts: list[int] = []
    out_ends: list[int] = []
    for row, text, ent in zip(rows.tolist(), texts, entities):
        spans, seen, full = _find(text, ent, ignore_case, MAX_MATCHES_PER_LINE)
        capped[row] |= full
        if spans:
            status[row] = found_status
            occurrences[row] = len(spans)
            for s, e in spans:
                out_rows.append(row)
                out_starts.append(s)
                out_ends.append(e)
        elif seen and status[row] == _ABSENT:
            status[row] = _INSIDE
    span_rows.append(np.asarray(out_rows, dtype=np.int64))
    span_starts.append(np.asarray(out_starts, dtype=np.int64))
    span_ends.append(np.asarray(out_ends, dtype=np.int64))


def _spans_frame(rows: list[np.ndarray], starts: list[np.ndarray], ends: list[np.ndarray]) -> pl.DataFrame:
    def cat(parts: list[np.ndarray], dtype: type[np.integer[Any]]) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    return pl.DataFrame(
        {"row": cat(rows, np.uint32), "start": cat(starts, np.int32), "end": cat(ends, np.int32)}
    )
