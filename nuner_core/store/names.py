"""The one check between a name read from the store and a local path: it must stay inside its directory.

File names in a manifest's ``files`` and the names of resumable-work objects come from the
store, and whoever can write one object there chooses them. Joined unchecked, a ``../``
segment or an absolute name writes anywhere on every worker that fetches or resumes (and
the size and checksum checks then pass on the file written outside). Every place that turns
such a name into a local path goes through ``local_path``; a manifest's names are checked
when it is read (``manifest.parse_manifest``), with the same rule (``unsafe``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nuner_core.store.errors import CorruptArtifact

_DRIVE = re.compile(r"^[A-Za-z]:")  # "C:/x": absolute on Windows, and never a name this store writes


def local_path(base: Path, name: str) -> Path:
    """``base / name`` for a plain relative name (``sub/file.bin``); else CorruptArtifact naming it.

    Refused: a name that is empty, absolute, holds a backslash, a NUL, an empty, ``.`` or ``..``
    segment, or whose normalised path leaves ``base``. The store itself writes only POSIX
    relative names without any of these (``Path.relative_to(...).as_posix()`` of real files).
    """
    why = unsafe(name)
    if why is None:
        joined = os.path.normpath(os.path.join(base, name))
        if os.path.commonpath([joined, os.path.normpath(base)]) != os.path.normpath(base):
            why = "it leaves the directory"
    if why is not None:
        raise CorruptArtifact(f"{name!r} is not a file name inside {base} ({why})")
    return base / name


def unsafe(name: object) -> str | None:
    """Why ``name`` is not a plain relative file name, or None when it is one."""
    if not isinstance(name, str) or not name:
        return "not a non-empty string"
    if "\x00" in name:
        return "it holds a NUL"
    if "\\" in name:
        return "it holds a backslash"
    if name.startswith("/") or _DRIVE.match(name):
        return "it is absolute"
    segments = name.split("/")
    if ".." in segments:
        return "it holds a '..' segment"
    if "" in segments or "." in segments:
        return "it holds an empty or '.' segment"
    return None
