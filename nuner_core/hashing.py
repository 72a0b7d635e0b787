"""The hashes: a file's contents (sha256, memoised), and short names derived from text.

Planning computes fingerprints of input files (recorded answers, imported corpora,
benchmark files) on every run; the memo makes a second plan in the same process free.
Short hashes name things (cache entries, encoder and data identities, prompt versions):
always the first hex digits of the text's sha256, so a name written before stays valid.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    stat = os.stat(path)
    memo = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def short_hash(text: str, n: int = 16) -> str:
    """The first ``n`` hex digits of the sha256 of ``text`` (UTF-8); hash a payload as ``short_hash(json.dumps(payload))``."""
    return hashlib.sha256(text.encode()).hexdigest()[:n]
