"""YAML written by users (profiles, ``--set`` values, experiment files), read within bounds.

A YAML alias (``*name``) repeats a node without copying it, so 600 bytes can name a billion
values: PyYAML builds them as shared objects in microseconds, and the first thing that walks
them (validation, an error quoting the input) takes gigabytes and minutes. So a file is
refused above :data:`MAX_BYTES`, and what it loads to above :data:`MAX_VALUES` values counted
as if every alias were a copy. The walk stops at the limit: refusing costs no more than that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20  # a profile or an experiment file is a few kB; 1 MiB leaves a wide margin
MAX_VALUES = 100_000  # scalars, lists and mappings, keys included, each alias counted as a copy


class YAMLTooLarge(ValueError):
    """A YAML file or value beyond the bounds; the message says which bound."""


def load_text(text: str, *, max_values: int = MAX_VALUES) -> Any:
    """``yaml.safe_load(text)``, refused (``YAMLTooLarge``) when it expands to more than ``max_values`` values."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise YAMLTooLarge(f"{size:,} bytes, more than the {MAX_BYTES:,} a YAML file here may hold")
    data = yaml.safe_load(text)
    _check_values(data, max_values)
    return data


def load_file(path: Path, *, max_values: int = MAX_VALUES) -> Any:
    """A YAML file, its size checked before it is read (OSError, UnicodeDecodeError, yaml.YAMLError, YAMLTooLarge)."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise YAMLTooLarge(f"{size:,} bytes, more than the {MAX_BYTES:,} a YAML file here may hold")
    return load_text(path.read_text(encoding="utf-8"), max_values=max_values)


def _check_values(data: Any, limit: int) -> None:
    count = 0
    stack = [data]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            raise YAMLTooLarge(f"it expands to more than {limit:,} values (YAML aliases such as *name repeat what "
                               f"they name; a self-referencing alias never ends)")
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
