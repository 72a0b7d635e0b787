"""The base of every config model (frozen, unknown keys rejected), and the run-only field marker.

A *run-only* field changes how a stage runs (device, batch sizes, rate limits, progress
intervals), not what it produces: the planner leaves it out of the artifact key.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

_RUN_ONLY = "in_key"  # the json_schema_extra entry that marks a run-only field (False: not in the key)


class StrictModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


def run_only(default: Any = PydanticUndefined, **field: Any) -> Any:
    """A run-only field: ``device: str = run_only("auto")``; further arguments as for ``pydantic.Field``."""
    return Field(default, json_schema_extra={_RUN_ONLY: False}, **field)


def is_run_only(field: FieldInfo) -> bool:
    """Whether ``field`` was declared with ``run_only`` (left out of the artifact key)."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get(_RUN_ONLY) is False
