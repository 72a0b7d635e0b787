"""Tag stage config: zero-shot tagging of the user's files with a two-encoder model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

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
    # Split the documents into this many shards (contiguous, content-keyed: nuner_core.tagging.shards), each tagged
    # as its own run (in turn, or on a pool's workers with nuner run --deployment nuner/tag), merged in input order.
    # Added later: 1 is the single run from before, and keeps its key.
    shards: Int = added(1, legacy=1, ge=1)
    shard: Int | None = added(None, legacy=None, ge=0)  # set by a sharded run for its shard runs: tag only this one (0-based)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(dict.fromkeys(v.strip() for v in value if v.strip()))
        if value and not cleaned:
            raise ValueError("labels are all empty")
        return cleaned

    @model_validator(mode="after")
    def _shard(self) -> TagConfig:
        if self.shard is not None and (self.shards < 2 or self.shard >= self.shards):
            raise ValueError(f"shard {self.shard} is not one of the {self.shards} shards (it needs shards > 1 and is 0 to "
                             "shards - 1); a sharded run sets it for its shard runs")
        return self
