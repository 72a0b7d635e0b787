"""The artifact store: content keys, manifests, atomic publish, lookup, on a local disk or object storage.

The public face: ``open_store`` (the one constructor), the ``ArtifactStore`` protocol it
returns, ``ArtifactRef``, ``artifact_key``, the manifest's names and the errors. Its parts:

- ``keys``: ``artifact_key`` and ``ArtifactRef``;
- ``manifest``: what a manifest records, checksums, checking a directory against it;
- ``location``: ``$NUNER_DATA_DIR`` / ``$NUNER_LOCAL_DIR``, a local path or an object-store URL;
- ``protocol``: the ``ArtifactStore`` protocol and the ``Clock`` type;
- ``local``: ``LocalStore``, a directory; ``remote``: ``RemoteStore``, an object-store URL
  (``objects``) composed with a ``LocalStore`` mirror on this machine, its resumable work kept
  in step by ``sync``; ``staging`` and ``reading`` are what both kinds share;
- ``inventory``: ``nuner store ls|du|gc``, built above both kinds (no backend imports it).
"""

from __future__ import annotations

import time
from pathlib import Path

from nuner_core.store.errors import ArtifactError, CorruptArtifact, StoreError
from nuner_core.store.keys import ArtifactRef, artifact_key
from nuner_core.store.local import LocalStore
from nuner_core.store.location import data_root, local_directory, local_root, object_store_url, store_location
from nuner_core.store.manifest import CHECKSUM, INCOMPLETE, MANIFEST, content_id, file_checksum
from nuner_core.store.names import local_path
from nuner_core.store.protocol import ArtifactStore, Clock
from nuner_core.store.remote import RemoteStore

__all__ = [
    "CHECKSUM", "INCOMPLETE", "MANIFEST", "ArtifactError", "ArtifactRef", "ArtifactStore", "Clock", "CorruptArtifact",
    "LocalStore", "RemoteStore", "StoreError", "artifact_key", "content_id", "data_root", "file_checksum", "local_path",
    "local_root", "open_store", "store_location",
]  # fmt: skip


def open_store(root: Path | str | None = None, *, local_dir: Path | str | None = None, clock: Clock = time.time) -> ArtifactStore:
    """The store ``root`` names (``None``: ``$NUNER_DATA_DIR``, default ``data/``).

    A local path (or a ``file://`` URL) gives a ``LocalStore``; an fsspec URL (``s3://bucket/prefix``,
    ``gs://...``, ``az://...``) a ``RemoteStore``, whose local mirror and caches live under
    ``local_dir`` (default ``$NUNER_LOCAL_DIR``, else ``data/``; a local store has no other
    directory than its root, and ignores it). ``clock`` stamps manifests (which artifact is the
    latest) and times what is moved aside; tests pass a fake one.
    """
    url = object_store_url(root)
    if url is not None:
        return RemoteStore(url, local_dir=local_dir, clock=clock)
    return LocalStore(local_directory(root), clock=clock)
