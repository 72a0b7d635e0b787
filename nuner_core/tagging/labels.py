"""The one label normalisation, and per-label thresholds matched through it (no torch: the CLI checks them first).

Users type ``Person``, ``PERSON``, ``person`` or ``date_of_birth`` for ``date of birth``: the
tagger embeds ``normalise_label(label)``, so these give the same label vectors and the same
entities, while the entities keep the label as the user spelled it. The evaluation's
zero-shot protocol and the server match labels through the same function.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

_SEPARATORS = re.compile(r"[_\-]+")


def normalise_label(label: str) -> str:
    """Lower case (``casefold``), ``_`` and ``-`` as spaces, white space collapsed and stripped.

    A label made of separators only (``-``) keeps them, so that no label normalises to nothing.
    """
    key = " ".join(_SEPARATORS.sub(" ", label).casefold().split())
    return key or " ".join(label.casefold().split())


def check_label_threshold(label: str, value: object) -> float:
    """A per-label threshold: a finite number strictly between 0 and 1 (0 would tag every word, 1 none)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value < 1:
        raise ValueError(f"threshold for label {label!r} must be a number in (0, 1), not {value!r}")
    return float(value)


def check_thresholds(per_label: Mapping[str, object] | None) -> dict[str, float]:
    """Per-label thresholds checked and keyed by normalised label; two spellings of one label are an error."""
    out: dict[str, float] = {}
    for label, value in (per_label or {}).items():
        key = normalise_label(label) if isinstance(label, str) else ""
        if not key:
            raise ValueError(f"per-label threshold for {label!r}: the label must be a non-empty string")
        if key in out:
            raise ValueError(f"per-label thresholds name the label {key!r} twice (spellings match ignoring case, '_' and '-')")
        out[key] = check_label_threshold(label, value)
    return out


def label_thresholds(labels: Sequence[str], default: float, per_label: Mapping[str, object] | None) -> np.ndarray:
    """(len(labels),) float64 threshold of each label: its own if given, else ``default``.

    A per-label threshold that matches none of ``labels`` is a ValueError (a typo would
    otherwise silently leave the default in force).
    """
    given = check_thresholds(per_label)
    keys = [normalise_label(label) for label in labels]
    unknown = sorted(set(given) - set(keys))
    if unknown:
        raise ValueError(f"per-label threshold(s) for {', '.join(repr(u) for u in unknown)}, which match no label "
                         f"(labels: {', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''})")  # fmt: skip
    return np.array([given.get(key, default) for key in keys], dtype=np.float64)


def parse_threshold_option(value: str) -> tuple[float | None, dict[str, float]]:
    """``--threshold`` text: ``0.05`` (global), ``person=0.1,date=0.03`` (per label) or both mixed.

    The global one is checked by the caller (``check_threshold``); per-label ones here.
    """
    default: float | None = None
    per_label: dict[str, float] = {}
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        label, sep, number = part.rpartition("=")
        try:
            x = float(number)
        except ValueError:
            raise ValueError(f"--threshold: {part!r} is not a number nor label=number") from None
        if not sep:
            if default is not None:
                raise ValueError(f"--threshold: two global thresholds ({default:g} and {x:g})")
            default = x
        else:
            per_label[label.strip()] = x
    check_thresholds(per_label)
    if default is None and not per_label:
        raise ValueError(f"--threshold: nothing in {value!r}; give e.g. 0.05 or person=0.1,date=0.03")
    return default, per_label
