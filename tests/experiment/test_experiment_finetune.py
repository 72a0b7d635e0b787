"""``report.stage: finetune``: points judged by their finetune artifact and collated from it (tiny models, seconds a point)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from experiment_helpers import artifact_counts, experiment_ref, points, write_experiment

from flows.experiment import experiment
from nuner_core.store import open_store

pytestmark = pytest.mark.slow


def _finetune_overrides(tiny: dict, tiny_bench: dict[str, str]) -> dict:
    return tiny | {
        # the tiny benchmark has no dev split: its test file stands in (this checks the plumbing, not a score)
        "finetune.data": {"kind": "files", "train": tiny_bench["train"], "dev": tiny_bench["test"], "test": tiny_bench["test"]},
        "finetune.seeds": [0],
        "finetune.epochs": 1,
        "finetune.max_length": 32,
        "finetune.stride": 8,
        "finetune.num_threads": 1,
        "finetune.retention_benchmarks": ["mit_movie"],
        "finetune.adapt.retention_test_size": 5,
    }


def test_finetune_points_are_run_and_collated_from_their_finetune_artifacts(prefect_harness, data_dir, tmp_path, tiny, tiny_bench):
    overrides = _finetune_overrides(tiny, tiny_bench)
    # zip: the method and whether the base is trained beside it go together; a value recurs across points
    sweep = {"finetune.method": ["token_classifier", "dual_encoder"], "finetune.compare_base": [True, False]}
    file = write_experiment(tmp_path / "exp.yaml", overrides, sweep, mode="zip", labels=["classifier", "adapt"], report={"stage": "finetune"})
    state = experiment(file=str(file), return_state=True)
    assert state.is_completed(), state.message
    counts = artifact_counts(data_dir)
    assert counts["finetune"] == 2 and counts["evaluate"] == 1 and counts["experiment"] == 1  # one evaluation, shared

    ref = experiment_ref(data_dir)
    table = pl.read_parquet(ref.dir / "results.parquet")
    store = open_store(data_dir)
    for p in points(ref):
        results = json.loads((store.lookup("finetune", p["keys"]["finetune"]).dir / "results.json").read_text())
        mine = table.filter(pl.col("point") == p["point"])
        runs = {(r["name"], r["seed"]): r["test"]["f1"] for r in results["runs"]}
        method = "token_classifier" if p["label"] == "classifier" else "dual_encoder"
        scored = mine.filter(pl.col("protocol") == method)
        assert {(r["encoder"], r["seed"]): r["value"] for r in scored.iter_rows(named=True)} == runs  # every run's test F1, as recorded
        assert set(scored["is_base"]) == ({True, False} if method == "token_classifier" else {False})
        assert set(mine["dataset"]) >= {"train.bio"} and mine.filter(pl.col("protocol") == method)["support_sentences"][0] == 120
    adapt = table.filter(pl.col("label") == "adapt")
    assert adapt.filter(pl.col("protocol") == "zero_shot")["seed"].to_list() == [None]  # measured once, before any seed trained
    retention = adapt.filter(pl.col("protocol").str.starts_with("retention_"))
    assert sorted(retention["protocol"]) == ["retention_after", "retention_before"] and set(retention["dataset"]) == {"mit_movie"}
    assert sorted(table["finetune.method"].unique()) == ["dual_encoder", "token_classifier"]

    summary = (ref.dir / "summary.md").read_text()
    assert "| point | label | data | method | NuNER | per seed | base |" in summary
    assert "| 0 | classifier | train.bio | token_classifier |" in summary
    assert "## Retention" in summary and "mit_movie" in summary
    assert not list(ref.dir.glob("*.png"))  # no figure: the points are not along an axis

    # A new point whose evaluation is already there still runs: a point is done when its finetune artifact is.
    more = write_experiment(tmp_path / "exp.yaml", overrides, {"finetune.method": ["token_classifier", "dual_encoder", "token_classifier"],
                            "finetune.compare_base": [True, False, False]}, mode="zip", report={"stage": "finetune"})  # fmt: skip
    result = experiment(file=str(more), return_state=True).result()
    assert result["ran"] == [2] and result["failed"] == []
    assert [p["status"] for p in points(experiment_ref(data_dir))] == ["reused", "reused", "built"]
    assert experiment(file=str(more), return_state=True).result()["state"] == "Cached"
