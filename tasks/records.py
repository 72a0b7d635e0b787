"""Prefect's cache records of the stage tasks, read back only when they are what we write.

The records live in the store (``.prefect-results/``), so that a fresh worker sees another's
work as ``Cached``. But a record names its own serializer, and Prefect decodes a record with
whatever it names: pickle, or JSON with any importable object decoder. Whoever can write the
bucket could plant a record that runs code on every worker that looks up that cache key. So
the stage tasks write JSON records of an ``ArtifactRef``, and before Prefect reads a record,
``check_record`` makes sure it is exactly that, for the stage and key asked; anything else is
deleted (Prefect then runs the task, which finds the artifact in the store, and writes a record
of its own).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from prefect.serializers import JSONSerializer

from nuner_core.store import ArtifactStore, RemoteStore

log = logging.getLogger(__name__)

RESULTS_DIR = ".prefect-results"
SERIALIZER = JSONSerializer()  # what the stage tasks write (task option result_serializer)
_SERIALIZER_FIELDS = SERIALIZER.model_dump(mode="json")
_REF_CLASS = "nuner_core.store.keys.ArtifactRef"


def _problem(raw: bytes, stage: str, key: str) -> str | None:
    """Why ``raw`` is not a record the stage task would have written for ``stage``/``key``; None if it is."""
    try:
        record = json.loads(raw)
        serializer = record["metadata"]["serializer"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"not a JSON record ({type(exc).__name__})"
    if serializer != _SERIALIZER_FIELDS:
        return f"its serializer is {str(serializer)[:120]!r}, not plain JSON"
    try:
        result = json.loads(record["result"])
    except (ValueError, KeyError, TypeError) as exc:
        return f"its result is not JSON ({type(exc).__name__})"
    if not isinstance(result, dict) or result.get("__class__") != _REF_CLASS:
        return "it does not hold an ArtifactRef"
    data: Any = result.get("data")
    if not isinstance(data, dict) or set(data) != {"stage", "key", "path", "url"}:
        return "its ArtifactRef has other fields"
    if not all(isinstance(v, str) for k, v in data.items() if k != "url") or not isinstance(data["url"], (str, type(None))):
        return "its ArtifactRef holds other than strings"
    if (data["stage"], data["key"]) != (stage, key):
        return f"it names the {data['stage']} artifact {data['key']}"
    return None


def check_record(store: ArtifactStore, record_key: str, stage: str, key: str) -> None:
    """Delete the cache record ``record_key`` if it is there and is not one the stage task writes."""
    rel = f"{RESULTS_DIR}/{record_key}"
    if isinstance(store, RemoteStore):
        raw = store.objects.read_bytes(rel)
    else:
        path = store.root / rel
        raw = path.read_bytes() if path.is_file() else None
    if raw is None:
        return
    problem = _problem(raw, stage, key)
    if problem is None:
        return
    log.warning("%s/%s: not a cache record this pipeline writes (%s); deleted, the stage's artifact is looked up instead",
                store.location, rel, problem)
    if isinstance(store, RemoteStore):
        store.objects.delete([rel])
    else:
        (store.root / rel).unlink(missing_ok=True)
