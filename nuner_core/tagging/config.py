"""Tag stage config: zero-shot tagging of the user's files with a two-encoder model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from nuner_core.basemodel import Float, Int, StrictModel, added, run_only
from nuner_core.tagging.decode import DEFAULT_DECODING, Decoding


class TagConfig(StrictModel):
    model: str | None = None  # a zero-shot model directory; None: the pretrain artifact's main run (control-<name>: that control)
    labels: tuple[str, ...] = ()  # label names, e.g. [person, dish, price]; any strings, thousands work
    inputs: tuple[str, ...] = ()  # files to tag: plain text (a document per line) or JSON lines; ${assets} and $ENV expanded
    format: Literal["auto", "jsonl", "text"] = "auto"  # auto: .jsonl/.json/.ndjson (optionally .gz) are JSON lines
    text_field: str = "text"  # the JSON lines field holding the text
    threshold: Float | None = Field(default=None, ge=0, le=1)  # None: the model's calibrated threshold
    # words or spans (nuner_core.tagging.decode), as nuner tag --decoding. Added later: the artifacts tagged before it
    # used words, so words keeps their keys whatever the default.
    decoding: Decoding = added(DEFAULT_DECODING, legacy="words")
    batch_size: Int = run_only(1024, ge=1)  # documents per tagging batch
    device: str = run_only("auto")  # auto: cuda when available, else cpu

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(dict.fromkeys(v.strip() for v in value if v.strip()))
        if value and not cleaned:
            raise ValueError("labels are all empty")
        return cleaned
