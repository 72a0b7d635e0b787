"""Dump the planner's keys, upstream keys and store inputs for a fixed set of cases, as JSON.

A refactor must not change an artifact key (every user's store would be rebuilt). Run this
before and after, then compare:

    .venv/bin/python scripts/key_snapshot.py > /tmp/before.json
    ... refactor ...
    .venv/bin/python scripts/key_snapshot.py > /tmp/after.json && diff /tmp/before.json /tmp/after.json

Cases: 6 configs × 9 stage selections × 3 stores (empty; holding the artifacts the config
would build; holding only stale artifacts of every stage). A plan that fails records its error.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nuner_core.config import load_config  # noqa: E402
from nuner_core.pipeline import plan  # noqa: E402
from nuner_core.registry import STAGE_NAMES  # noqa: E402
from nuner_core.store import open_store  # noqa: E402

# A fixed directory, not a random temporary one: file paths (an imported dataset, tag inputs)
# are part of some configs' keys, so a random directory would change those keys on every run.
WORK_DIR = Path("/tmp/nuner-key-snapshot")

STALE_KEY = "0123456789abcdef"
SELECTIONS: list[list[str] | None] = [None, ["corpus"], ["annotate"], ["dataset"], ["pretrain"],
                                      ["evaluate"], ["finetune"], ["tag"], ["pretrain", "evaluate"]]


def _configs(tmp: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    released = tmp / "nuner.csv"
    released.write_text('input,output\n"Paris is big.","[\'Paris <> city\']"\n')
    docs = tmp / "docs.txt"
    docs.write_text("Paris.\n")
    return {
        "demo": ("demo", {}),
        "paper": ("paper", {}),
        "demo-import": ("demo", {"dataset.source": "nuner_csv", "dataset.path": str(released)}),
        "demo-no-pretrain": ("demo", {"evaluate.use_pretrain": False}),
        "demo-overrides": ("demo", {"dataset.seed": 1, "pretrain.lr": 1e-4, "corpus.batch_size": 17,
                                    "annotate.max_cost": 3.5}),
        "demo-targets": ("demo", {"tag.labels": ["city"], "tag.inputs": [str(docs)],
                                  "finetune.data": {"kind": "benchmark", "name": "mit_restaurant"}}),
    }


def _plan(config: Any, stages: list[str] | None, store: Any) -> Any:
    try:
        return [{"stage": p.stage, "key": p.key, "upstream_keys": p.upstream_keys,
                 "inputs": {k: v.key for k, v in sorted(p.inputs.items())}}
                for p in plan(config, stages, store)]
    except Exception as exc:  # noqa: BLE001 - the error is part of the snapshot
        return {"error": f"{type(exc).__name__}: {exc}".replace(str(store.location), "<store>")}


def _fill(store: Any, keys: dict[str, str]) -> None:
    for stage, key in keys.items():
        with store.publish(stage, key, {"stage": stage, "key": key}) as out:
            (out / "marker.txt").write_text(key)


def main() -> None:
    out: dict[str, Any] = {}
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    WORK_DIR.mkdir(parents=True)
    tmp = WORK_DIR
    for name, (profile, overrides) in _configs(tmp).items():
        config = load_config(profile, overrides)
        stores = {}
        for state in ("empty", "expected", "stale"):
            root = tmp / f"{name}-{state}"
            stores[state] = open_store(root)
        expected = {p.stage: p.key for p in plan(config, None, stores["empty"])}
        _fill(stores["expected"], expected)
        _fill(stores["stale"], {stage: STALE_KEY for stage in STAGE_NAMES})
        for stages in SELECTIONS:
            for state, store in stores.items():
                out[f"{name} | {','.join(stages) if stages else 'all'} | {state}"] = _plan(config, stages, store)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()
    print(f"{len(out)} cases", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
