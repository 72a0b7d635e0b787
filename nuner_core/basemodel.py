"""The base of every config model (frozen, unknown keys rejected), its number types, and the run-only field marker.

Config numbers are meant as written: no float field takes inf or NaN (a learning rate, rate
limit or cost of ``.inf`` is a typo, never a setting; "no limit" is ``None`` where a field
offers it), and an ``Int`` or ``Float`` field takes no yes/no value (YAML reads ``yes``, ``on``
and ``true`` as True, which pydantic would otherwise take as 1). Every int and float field of a
config is declared ``Int`` / ``Float``; neither changes how a valid value is stored or dumped.

A *run-only* field changes how a stage runs (device, batch sizes, rate limits, progress
intervals), not what it produces: the planner leaves it out of the artifact key.

An *added* field is one that came after artifacts existed (``added(default, legacy=...)``): its
``legacy`` value reproduces what the stage did before the field existed (it need not be the
default). The planner leaves the field out of the key exactly when its value equals the legacy
one, so existing artifacts keep their keys, and any other value changes the key.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, PydanticUndefined, to_jsonable_python

_RUN_ONLY = "in_key"  # the json_schema_extra entry that marks a run-only field (False: not in the key)
_LEGACY = "legacy"  # the json_schema_extra entry of an added field: its legacy value, as the JSON dump holds it


class StrictModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=(), allow_inf_nan=False)


def _no_yes_or_no(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "Input should be a number, not a yes/no value")
    return value


Int = Annotated[int, BeforeValidator(_no_yes_or_no)]
Float = Annotated[float, BeforeValidator(_no_yes_or_no)]  # finite: StrictModel refuses inf and NaN


def run_only(default: Any = PydanticUndefined, **field: Any) -> Any:
    """A run-only field: ``device: str = run_only("auto")``; further arguments as for ``pydantic.Field``."""
    return Field(default, json_schema_extra={_RUN_ONLY: False}, **field)


def is_run_only(field: FieldInfo) -> bool:
    """Whether ``field`` was declared with ``run_only`` (left out of the artifact key)."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get(_RUN_ONLY) is False


def added(default: Any = PydanticUndefined, *, legacy: Any, **field: Any) -> Any:
    """A field added after artifacts existed: ``decoding: str = added("spans", legacy="words")``.

    ``legacy``: the value that behaves as the stage did before the field existed; at that value
    the field is left out of the artifact key. Further arguments as for ``pydantic.Field``.
    """
    # Kept in its JSON form (a tuple as a list), the form the planner compares against.
    return Field(default, json_schema_extra={_LEGACY: to_jsonable_python(legacy)}, **field)


def legacy_value(field: FieldInfo) -> tuple[bool, Any]:
    """``(True, legacy value in JSON form)`` for a field declared with ``added``, else ``(False, None)``."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and _LEGACY in extra:
        return True, extra[_LEGACY]
    return False, None
