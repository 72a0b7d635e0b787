"""Reading JSON lines: one reader, one wording of what is wrong, always naming ``file:line``.

A JSON-lines file holds one JSON object per line; blank lines are skipped, a byte-order mark
on the first line is ignored, and a ``.gz`` file is read through gzip. Every problem (not
UTF-8, not JSON, a string holding a lone surrogate such as ``"\\ud800"``, not an object) is a
``JsonLinesError`` whose message starts with ``path:line:``, so that the user can open the
file at the line.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from io import BufferedReader
from pathlib import Path
from typing import Any, Callable, Iterator

# A JSON escape of a UTF-16 surrogate: a pair decodes to one character, a lone one to a string
# that cannot be encoded (written, hashed, tokenised) later, far from the line that held it.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JsonLinesError(ValueError):
    """A line of a JSON-lines file that cannot be read; the message is ``path:line: problem``."""

    def __init__(self, path: str | os.PathLike[str], lineno: int, problem: str) -> None:
        super().__init__(f"{path}:{lineno}: {problem}")
        self.path = Path(path)
        self.lineno = lineno
        self.problem = problem


def open_lines(path: str | os.PathLike[str]) -> gzip.GzipFile | BufferedReader:
    """The file's bytes, through gzip when its name ends in ``.gz``."""
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")


def decode_line(raw: bytes, path: str | os.PathLike[str], lineno: int) -> str:
    """One line as text: UTF-8, without its line ending (and, on the first line, without a byte-order mark)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonLinesError(path, lineno, f"not UTF-8 text ({exc.reason} at byte {exc.start} of the line); re-encode the file as UTF-8") from None
    if lineno == 1:
        line = line.lstrip("\ufeff")
    return line.rstrip("\r\n")


def parse_line(line: str, path: str | os.PathLike[str], lineno: int) -> Any:
    """The JSON value of one line."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        hint = " (a JSON array? give one object per line)" if lineno == 1 and line.lstrip().startswith("[") else ""
        raise JsonLinesError(path, lineno, f"not JSON (column {exc.colno}: {exc.msg}){hint}") from None
    if _SURROGATE_ESCAPE.search(line) and _has_lone_surrogate(value):
        raise JsonLinesError(path, lineno, "a string holds a lone surrogate (an escape such as \\ud800 without its pair): not valid Unicode text")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def read_json_lines(
    path: str | os.PathLike[str], on_invalid: Callable[[JsonLinesError], None] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line, lazily.

    A line that is not a JSON object raises ``JsonLinesError``; with ``on_invalid``, it is
    handed that error instead and skipped (for sources that count and drop bad records).
    """
    with open_lines(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = decode_line(raw, path, lineno)
                if not line.strip():
                    continue
                value = parse_line(line, path, lineno)
                if not isinstance(value, dict):
                    raise JsonLinesError(path, lineno, f"expected a JSON object, got a JSON {type(value).__name__}")
            except JsonLinesError as exc:
                if on_invalid is None:
                    raise
                on_invalid(exc)
                continue
            yield lineno, value


def read_json_objects(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every object of a JSON-lines file (a metrics log, a small record file), in order."""
    return [value for _, value in read_json_lines(path)]
