"""Where a store is: a local directory, or an object-store URL with a local directory on this machine.

``$NUNER_DATA_DIR`` (default ``data/``) names the store; it may be an fsspec URL
(``s3://bucket/prefix``, ``gs://...``, ``az://...``; ``file://`` is a local path). A store on
object storage keeps what this machine fetched, its caches and its local Prefect stack under
``$NUNER_LOCAL_DIR`` (default ``data/``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nuner_core.hashing import short_hash
from nuner_core.store.objects import is_url, local_path_of, redact


def store_location() -> str:
    """Where the artifacts live: ``$NUNER_DATA_DIR`` (a local path, default ``data/``, or an fsspec URL).

    A local path comes back absolute; a ``file://`` URL as its path; an object-store URL as given.
    """
    raw = os.environ.get("NUNER_DATA_DIR", "data").strip() or "data"
    if is_url(raw):
        return raw.rstrip("/")
    return str(Path(local_path_of(raw)).resolve())


def default_local_dir() -> Path:
    """This machine's directory for a store on object storage: ``$NUNER_LOCAL_DIR``, default ``data/``."""
    return Path(os.environ.get("NUNER_LOCAL_DIR") or "data").resolve()


def local_root() -> Path:
    """This machine's directory for the store: the store itself when it is local; with the store on
    object storage, ``$NUNER_LOCAL_DIR`` (default ``data/``), which holds the fetched artifacts, the
    shared caches (``cache/``), resumable work and the local Prefect stack (``stack/``)."""
    location = store_location()
    return default_local_dir() if is_url(location) else Path(location)


def data_root() -> Path:
    """Artifact root on this machine: ``$NUNER_DATA_DIR``, default ``data/`` under the working directory
    (with the store on object storage: its local directory, see ``local_root``)."""
    return local_root()


def object_store_url(root: Path | str | None) -> str | None:
    """The object-store URL a store root names (``None``: the store ``$NUNER_DATA_DIR`` names), or
    None when it is a local directory (a plain path or a ``file://`` URL)."""
    location = str(root) if root is not None else store_location()
    return location if is_url(location) else None


def local_directory(root: Path | str | None) -> Path:
    """The directory of a local store root (``None``: ``$NUNER_DATA_DIR``, made absolute; a ``file://`` URL: its path)."""
    return Path(local_path_of(str(root))) if root is not None else data_root()


def mirror_name(url: str) -> str:
    """A directory name for a store URL: readable, and unique by a hash (``s3_bucket_prefix-1a2b3c4d``)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", redact(url).replace("://", "_")).strip("_")
    return f"{readable[:80]}-{short_hash(url, 8)}"
