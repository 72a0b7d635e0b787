"""Configured paths: ``${assets}`` and ``$ENV`` expansion.

Kept apart from ``nuner_core.config`` (which assembles every stage's config and so sits
above the stage packages) so that stage code can expand a path without importing upward.
"""

from __future__ import annotations

import os
from pathlib import Path


def assets_dir() -> Path:
    """The shared assets: ``$NUNER_ASSETS``, else ``../shared/assets`` beside the project."""
    env = os.environ.get("NUNER_ASSETS")
    if env:
        return Path(env)
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        candidate = root.parent / "shared" / "assets"
        if candidate.is_dir():
            return candidate
    return Path(__file__).resolve().parents[1].parent / "shared" / "assets"


def expand_path(value: str) -> str:
    """Expand ``${assets}`` and environment variables in a configured path."""
    return os.path.expandvars(value.replace("${assets}", str(assets_dir())))
