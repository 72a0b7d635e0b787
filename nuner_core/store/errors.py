"""The artifact store's errors, in one module that every part of the store can import.

``nuner_core.store`` exports them; callers import them from there.
"""

from __future__ import annotations


class ArtifactError(RuntimeError):
    """An artifact cannot be used as it is; the message names the file and the stage to rerun."""


class CorruptArtifact(ArtifactError):
    """Files missing, of the wrong size, or whose content no longer matches the manifest."""


class StoreError(ArtifactError):
    """The store itself cannot be used (no such bucket, no credentials, a backend not installed).

    The message names the store's URL (never a credential) and what to check; it is an
    ``ArtifactError``, so a run fails with it as one message instead of a traceback.
    """
