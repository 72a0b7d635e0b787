"""CoNLL / BIO files: one ``token<sep>tag`` line per word, sentences separated by blank lines.

What the reader accepts (every quirk of the shared benchmark files and the usual others):

- token and tag separated by a tab, or by one or more spaces; with more than two columns
  (CoNLL-2003: token POS chunk NER) the token is the first and the tag the last column;
  a tab-separated line keeps spaces inside its token;
- ``-DOCSTART-`` lines (with or without a tag) end a document and are skipped;
- blank lines (any number, whitespace only, CRLF endings, a BOM) between sentences, and a
  file that ends with or without a trailing blank line or final newline;
- tags in IOB1, IOB2 or IO, prefix and type in any case (``b-actor``, ``B-ACTOR``): every
  sentence comes out in IOB2 (``I-X`` that does not continue an ``X`` becomes ``B-X``,
  counted), and types that differ only in case are one type, spelled as first seen.

Anything else (a line with one column, an empty token, a tag that is neither ``O`` nor
``B-``/``I-`` something) is a :class:`ConllFormatError` naming the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from nuner_core.stage_api import StageError

_TAG = re.compile(r"^([BbIi])[-_](.+)$")


class ConllFormatError(StageError, ValueError):
    """A line that is not ``token<sep>tag``; the message names the file and the line."""


@dataclass(frozen=True)
class Sentence:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]  # IOB2, types spelled canonically: "O", "B-Actor", "I-Actor"


@dataclass
class ConllStats:
    lines: int = 0
    sentences: int = 0
    tokens: int = 0
    docstarts: int = 0
    repaired_tags: int = 0  # I-X that started an entity (IOB1 / IO / broken IOB2), rewritten as B-X

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class TypeNames:
    """Case-insensitive entity-type names: the first spelling seen is kept (shared across files)."""

    canonical: dict[str, str] = field(default_factory=dict)

    def __call__(self, raw: str) -> str:
        return self.canonical.setdefault(raw.lower(), raw)


def split_line(line: str) -> list[str]:
    """Columns of one line: tab-separated if it has a tab, else whitespace-separated."""
    if "\t" in line:
        return [c.strip() for c in line.split("\t") if c.strip()]
    return line.split()


def parse_tag(tag: str, types: TypeNames) -> tuple[str, str | None] | None:
    """``("B"|"I"|"O", type or None)``, or None when the tag is malformed."""
    if tag.upper() == "O":
        return "O", None
    match = _TAG.match(tag)
    if match is None or not match.group(2).strip():
        return None
    return match.group(1).upper(), types(match.group(2))


def to_iob2(parsed: Sequence[tuple[str, str | None]]) -> tuple[list[str], int]:
    """IOB2 tags from (prefix, type) pairs in IOB1, IOB2 or IO, and how many I- were rewritten to B-."""
    tags: list[str] = []
    repaired = 0
    previous_type: str | None = None
    for prefix, type_ in parsed:
        if prefix == "O":
            tags.append("O")
        elif prefix == "I" and type_ != previous_type:
            tags.append(f"B-{type_}")
            repaired += 1
        else:
            tags.append(f"{prefix}-{type_}")
        previous_type = type_
    return tags, repaired


def parse_conll(lines: Iterable[str], source: str, types: TypeNames | None = None) -> tuple[list[Sentence], ConllStats]:
    """Sentences (IOB2) from CoNLL/BIO lines; ``source`` names the file in errors."""
    types = types if types is not None else TypeNames()
    stats = ConllStats()
    sentences: list[Sentence] = []
    tokens: list[str] = []
    parsed: list[tuple[str, str | None]] = []

    def close() -> None:
        if tokens:
            tags, repaired = to_iob2(parsed)
            stats.repaired_tags += repaired
            sentences.append(Sentence(tuple(tokens), tuple(tags)))
            stats.tokens += len(tokens)
            tokens.clear()
            parsed.clear()

    lineno = 0
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if lineno == 1:
            line = line.lstrip("\ufeff")
        if not line.strip():
            close()
            continue
        columns = split_line(line)
        if columns[0] == "-DOCSTART-":
            close()
            stats.docstarts += 1
            continue
        if len(columns) < 2:
            raise ConllFormatError(f"{source}:{lineno}: expected 'token<space or tab>tag', got {line!r}")
        tag = parse_tag(columns[-1], types)
        if tag is None:
            raise ConllFormatError(
                f"{source}:{lineno}: tag {columns[-1]!r} is neither 'O' nor 'B-<type>' / 'I-<type>' (line {line!r})"
            )
        tokens.append(columns[0])
        parsed.append(tag)
    close()
    stats.lines = lineno
    stats.sentences = len(sentences)
    return sentences, stats


def read_conll(path: str | Path, types: TypeNames | None = None) -> tuple[list[Sentence], ConllStats]:
    """Read one CoNLL/BIO file (UTF-8); see the module docstring for what is accepted."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig") as fh:  # universal newlines: LF, CRLF and CR all end a line
            return parse_conll(fh, str(path), types)
    except UnicodeDecodeError as exc:
        raise ConllFormatError(f"{path}: not UTF-8 text ({exc})") from None


def entity_types(sentences: Iterable[Sentence]) -> list[str]:
    """Entity types that occur in the sentences, sorted."""
    found = {tag[2:] for s in sentences for tag in s.tags if tag != "O"}
    return sorted(found)


def mentions(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entity mentions ``(start, end exclusive, type)`` of an IOB2 sequence (strict: I-X must continue X)."""
    spans: list[tuple[int, int, str]] = []
    start: int | None = None
    current: str | None = None
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and current == tag[2:]:
            continue
        if current is not None:
            spans.append((start, i, current))  # type: ignore[arg-type]
            start, current = None, None
        if tag.startswith("B-"):
            start, current = i, tag[2:]
    if current is not None:
        spans.append((start, len(tags), current))  # type: ignore[arg-type]
    return spans
