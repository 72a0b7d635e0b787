"""The caps on a request and the checks of its fields: every client mistake is a 4xx with one clear message.

An error answers ``{"error": message, "field": "texts[3]" | null, "limit": n (when a cap)}``:
413 for a body over ``max_body_bytes``, 422 for a field over its cap or of the wrong kind, 400 for
malformed JSON, 404 for an unknown model, 503 with ``Retry-After`` when a request outlives
``timeout_s``. The checks run before a request is queued, so one client's bad input never fails
another's batch.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictStr


@dataclass(frozen=True)
class Limits:
    """Per-request caps (``nuner serve --max-...``) and the per-request timeout."""

    max_body_bytes: int = 1_000_000
    max_texts: int = 256
    max_chars: int = 20_000  # characters per text
    max_labels: int = 1_000
    timeout_s: float = 30.0
    retry_after_s: int = 1  # what a 503 tells the client to wait

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"limit {name} must be a positive number, not {value!r}")


class ClientError(Exception):
    """A client mistake: the status, one message, the field it is about and the cap it broke."""

    def __init__(self, status: int, message: str, field: str | None = None, limit: float | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.limit = status, message, field, limit
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message, "field": self.field}
        if self.limit is not None:
            out["limit"] = self.limit
        return out


class TagRequest(BaseModel):
    """``POST /v1/tag``: zero-shot tagging of ``texts`` with any ``labels``."""

    model_config = ConfigDict(extra="forbid")
    model: StrictStr = Field(description="a served model's name (GET /v1/models)")
    texts: list[StrictStr] = Field(description="the texts to tag")
    labels: list[StrictStr] = Field(description="label names, e.g. ['person', 'dish', 'price']")
    threshold: StrictFloat | None = Field(None, description="p(word is the label) needed; default: the model's")
    thresholds: dict[StrictStr, StrictFloat] | None = Field(None, description="per-label thresholds {label: p}")
    decoding: Literal["words", "spans"] | None = Field(None, description="words or spans, as `nuner tag --decoding`; default: its default")


class PredictRequest(BaseModel):
    """``POST /v1/predict``: a fine-tuned token classifier over ``texts``."""

    model_config = ConfigDict(extra="forbid")
    model: StrictStr
    texts: list[StrictStr]


def check_texts(texts: Sequence[str], limits: Limits) -> None:
    if not texts:
        raise ClientError(422, "no texts: give at least one text", "texts")
    if len(texts) > limits.max_texts:
        raise ClientError(422, f"{len(texts)} texts; at most {limits.max_texts} per request", "texts", limits.max_texts)
    for i, text in enumerate(texts):
        if len(text) > limits.max_chars:
            raise ClientError(422, f"text {i} has {len(text):,} characters; at most {limits.max_chars:,}", f"texts[{i}]", limits.max_chars)
        _check_unicode(text, f"texts[{i}]")


def check_labels(labels: Sequence[str], limits: Limits) -> list[str]:
    """The labels cleaned as ``nuner tag`` cleans them (``clean_labels``), within the cap."""
    from nuner_core.tagging.settings import LabelError, clean_labels

    if not labels:
        raise ClientError(422, "no labels: give at least one label name, e.g. [\"person\", \"dish\"]", "labels")
    if len(labels) > limits.max_labels:
        raise ClientError(422, f"{len(labels)} labels; at most {limits.max_labels} per request", "labels", limits.max_labels)
    for i, label in enumerate(labels):
        _check_unicode(label, f"labels[{i}]")
    try:
        return clean_labels(labels)
    except LabelError as exc:
        raise ClientError(422, str(exc), "labels") from None


def check_thresholds(labels: list[str], threshold: float, thresholds: Mapping[str, float] | None) -> None:
    """The global threshold in [0, 1] and each per-label one in (0, 1), naming a label (as ``nuner tag`` checks)."""
    from nuner_core.tagging.decode import check_threshold
    from nuner_core.tagging.labels import label_thresholds

    try:
        check_threshold(threshold)
    except ValueError as exc:
        raise ClientError(422, str(exc), "threshold") from None
    for label in thresholds or {}:
        _check_unicode(label, "thresholds")
    try:
        label_thresholds(labels, threshold, thresholds)
    except ValueError as exc:
        raise ClientError(422, str(exc), "thresholds") from None


def _check_unicode(text: str, field: str) -> None:
    """A lone surrogate (JSON ``"\\ud800"``) is no Unicode text: the tokenizer would fail on it later."""
    for position, char in enumerate(text):
        if unicodedata.category(char) == "Cs":
            raise ClientError(422, f"{field} holds a lone surrogate (U+{ord(char):04X}) at character {position}: not valid Unicode text", field)


def validation_error(errors: Sequence[Mapping[str, Any]]) -> ClientError:
    """FastAPI's request-validation errors as one ClientError: the first error, its field, its message."""
    first = dict(errors[0]) if errors else {}
    loc = [part for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return ClientError(400, f"malformed JSON: {ctx.get('error', first.get('msg', 'cannot parse the body'))}")
    field = _field_path(loc)
    kind = first.get("type", "")
    if kind == "missing" and field == "body":
        return ClientError(422, f"no request body: send a JSON object{_EXAMPLE}")
    if kind == "missing":
        return ClientError(422, f"missing field {field!r}", field)
    if kind == "extra_forbidden":
        return ClientError(422, f"unknown field {field!r}", field)
    if kind == "model_attributes_type":
        return ClientError(422, f"the body must be a JSON object (Content-Type: application/json){_EXAMPLE}")
    got = first.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    return ClientError(422, f"{field}: {first.get('msg', 'invalid')} (got {shown[:80]})", field)


_EXAMPLE = ', e.g. {"model": "nuner", "texts": ["..."], "labels": ["person"]}'


def _field_path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"
