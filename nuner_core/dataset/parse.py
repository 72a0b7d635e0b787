"""Parse LLM answers made of ``entity <> concept <> description`` lines, vectorised with polars.

What LLMs really write is tolerated: numbering and bullets (``1.``, ``-``, ``*``), quotes
or markdown emphasis around a field, extra spaces, a missing description, blank lines,
prose before or after the list (a line without the separator, dropped and counted).
Every non-blank line ends up either parsed or dropped with a reason:

    no_separator   the line has no ``<>``: prose, a heading, a truncated line
    empty_entity   nothing left of the entity once quotes and bullets are removed
    empty_concept  nothing left of the concept once normalised
    duplicate      the same (entity, concept) already appeared in this answer
    entity_too_long  the entity has more than MAX_ENTITY_CHARS characters: no name is that long,
                   and searching a sentence for it costs up to length x sentence (counted only
                   when it happens, so that the stats of ordinary answers are what they were)

Concepts are normalised (trimmed, lower-cased, runs of white space collapsed); entities
are only trimmed, since they must be found verbatim in the sentence.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import polars as pl

SEPARATOR = "<>"
DROP_REASONS = ("no_separator", "empty_entity", "empty_concept", "duplicate")
MAX_ENTITY_CHARS = 1_000

# A list marker at the start of a line, followed by white space: "1." "2)" "(3)" "-" "*" "•" "#".
_LIST_MARKER = r"^(?:[-*•‣◦▪·+]+|\(?\d{1,3}[.):\]]|\(\d{1,3}\)|#{1,6})\s+"
# A field wrapped in one pair of quotes or markdown emphasis: "x" 'x' “x” ‘x’ «x» **x** *x* `x`.
_WRAPPED = r"^(?:\"(.*)\"|'(.*)'|“(.*)”|‘(.*)’|«(.*)»|\*\*(.*)\*\*|\*(.*)\*|`(.*)`)$"
_WRAPPED_GROUPS = "".join(f"${{{i}}}" for i in range(1, 9))
_WRAPPED_START = r"^[\"'“‘«*`]"
_MARKER_START = r"^(?:[-*•‣◦▪·+#(]|\d)"


def _where(values: pl.Series, mask_pattern: str, fix: Callable[[pl.Series], pl.Series]) -> pl.Series:
    """Apply ``fix`` only to the values matching ``mask_pattern``: regex replacements are
    the expensive part of parsing, and most lines need none."""
    mask = values.str.contains(mask_pattern).fill_null(False)
    if not mask.any():
        return values
    return values.clone().scatter(mask.arg_true(), fix(values.filter(mask)))


def unwrap(values: pl.Series) -> pl.Series:
    """Trim, then remove one pair of surrounding quotes / emphasis, then trim again."""
    values = values.str.strip_chars()
    return _where(values, _WRAPPED_START, lambda v: v.str.replace(_WRAPPED, _WRAPPED_GROUPS).str.strip_chars())


def normalise_concepts(values: pl.Series) -> pl.Series:
    """Trim (and unwrap), lower-case, collapse runs of white space to one space."""
    values = unwrap(values).str.to_lowercase()
    return _where(values, r"\s\s|[^\S ]", lambda v: v.str.replace_all(r"\s+", " "))


def normalise_concept_str(concept: str) -> str:
    """The same normalisation for one Python string (config values, tests)."""
    return str(normalise_concepts(pl.Series([concept], dtype=pl.String)).item())


def split_answer(responses: pl.Series) -> pl.Series:
    """Raw answers -> ``list[str]`` of lines; ``\r\n`` and a lone ``\r`` end a line too. Null stays null."""
    responses = responses.cast(pl.String)
    mask = responses.str.contains("\r", literal=True).fill_null(False)
    if mask.any():
        responses = responses.clone().scatter(mask.arg_true(), responses.filter(mask).str.replace_all("\r\n?", "\n"))
    return responses.str.split("\n")


def explode_lines(lines: pl.Series, sid: np.ndarray | None = None) -> pl.DataFrame:
    """One row per line. ``lines`` is ``list[str]`` per sentence (null: no lines).

    Returns ``sid`` (u32, position of the sentence in ``lines`` unless ``sid`` maps it),
    ``line`` (u32, 0-based position of the line in its answer) and ``raw`` (str).
    """
    lengths = lines.list.len().fill_null(0).to_numpy().astype(np.int64)  # (S,)
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    line_no = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)  # (L,)
    sids = np.repeat(np.arange(len(lengths), dtype=np.uint32) if sid is None else sid.astype(np.uint32), lengths)
    # explode turns an empty list into one null row: leave those (and null answers) out first.
    raw = lines.filter(lines.list.len() > 0).explode() if total else pl.Series("raw", [], dtype=pl.String)
    return pl.DataFrame(
        {"sid": sids, "line": line_no.astype(np.uint32), "raw": raw.cast(pl.String).rename("raw")}
    )


@dataclass
class ParsedLines:
    parsed: pl.DataFrame  # sid u32, line u32, entity str, concept str, description str|null
    rejected: pl.DataFrame  # sid u32, line u32, raw str, reason str
    counts: Counter[str]  # lines, lines.blank, lines.parsed, lines.extra_fields, lines.dropped.<reason>


def parse_lines(lines: pl.DataFrame) -> ParsedLines:
    """Parse exploded answer lines (``sid``, ``line``, ``raw``) into annotations.

    Blank lines are not entity lines: they are counted (``lines.blank``) and skipped.
    """
    counts: Counter[str] = Counter({f"lines.dropped.{reason}": 0 for reason in DROP_REASONS})
    clean = lines["raw"].fill_null("").str.strip_chars()
    nonblank = clean != ""
    counts["lines.blank"] = int((~nonblank).sum())
    index = nonblank.arg_true()  # rows of ``lines`` still in play; strings are copied as little as possible
    clean = clean.filter(nonblank)
    counts["lines"] = len(index)
    clean = _where(clean, _MARKER_START, lambda v: v.str.replace(_LIST_MARKER, ""))
    has_sep = clean.str.contains(SEPARATOR, literal=True)
    rejected = {"no_separator": index.filter(~has_sep)}
    if not has_sep.all():
        index, clean = index.filter(has_sep), clean.filter(has_sep)
    fields = clean.str.splitn(SEPARATOR, 3).struct.unnest()
    rest = fields["field_2"]
    counts["lines.extra_fields"] = int(rest.str.contains(SEPARATOR, literal=True).sum())  # kept in the description
    entity = unwrap(fields["field_0"])
    concept = normalise_concepts(fields["field_1"])
    description = unwrap(rest)
    description = pl.select(pl.when(description == "").then(None).otherwise(description)).to_series()
    sid = lines["sid"].gather(index)
    empty_entity = (entity == "").to_numpy()
    empty_concept = (concept == "").to_numpy() & ~empty_entity
    too_long = (entity.str.len_chars() > MAX_ENTITY_CHARS).to_numpy() & ~empty_concept
    duplicate = ~_first_distinct(sid, entity, concept) & ~empty_entity & ~empty_concept & ~too_long
    masks = {"empty_entity": empty_entity, "empty_concept": empty_concept, "duplicate": duplicate, "entity_too_long": too_long}
    for reason, mask in masks.items():
        if reason in DROP_REASONS or mask.any():
            rejected[reason] = index.filter(pl.Series(mask))
    ok = ~(empty_entity | empty_concept | duplicate | too_long)
    parsed = pl.DataFrame(
        {
            "sid": sid,
            "line": lines["line"].gather(index),
            "entity": entity,
            "concept": concept,
            "description": description,
        }
    )
    if not ok.all():
        parsed = parsed.filter(pl.Series(ok))
    parts = [
        lines.select("sid", "line", "raw")[rows].with_columns(reason=pl.lit(reason))
        for reason, rows in rejected.items()
        if len(rows)
    ]
    rejected_df = (
        pl.concat(parts)
        if parts
        else pl.DataFrame(schema={"sid": pl.UInt32, "line": pl.UInt32, "raw": pl.String, "reason": pl.String})
    )
    for reason, rows in rejected.items():
        counts[f"lines.dropped.{reason}"] = len(rows)
    counts["lines.parsed"] = parsed.height
    return ParsedLines(parsed=parsed, rejected=rejected_df, counts=counts)


def _first_distinct(sid: pl.Series, entity: pl.Series, concept: pl.Series) -> np.ndarray:
    """(N,) bool: the first line of each (sentence, entity, concept) in the answer.

    A cheap 64-bit hash finds the candidate repeats; only those are compared exactly.
    """
    frame = pl.DataFrame({"sid": sid, "e": entity.hash(seed=1), "c": concept.hash(seed=2)})
    key = frame.select(pl.struct("sid", "e", "c").hash(seed=3)).to_series()
    first = key.is_first_distinct().to_numpy()
    if first.all():
        return first
    candidates = key.is_duplicated().to_numpy()
    rows = np.flatnonzero(candidates)
    exact = pl.DataFrame({"sid": sid.gather(rows), "e": entity.gather(rows), "c": concept.gather(rows)})
    exact_first = exact.select(pl.struct("sid", "e", "c").is_first_distinct()).to_series().to_numpy()
    first = np.ones(len(key), dtype=bool)
    first[rows] = exact_first
    return first


def parse_answer(response: str) -> tuple[list[tuple[str, str, str | None]], Counter[str]]:
    """Parse one answer; for tests and interactive use. Returns (entity, concept, description) triples."""
    exploded = explode_lines(split_answer(pl.Series("lines", [response])))
    result = parse_lines(exploded)
    triples = [(e, c, d) for e, c, d in result.parsed.select("entity", "concept", "description").iter_rows()]
    return triples, result.counts
