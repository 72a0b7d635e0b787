"""The evaluate stage end to end with tiny encoders: results, summary, plot, caches, pretrain input, rerun alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from nuner_core.config import load_config
from nuner_core.iob2.conll import ConllFormatError
from nuner_core.pipeline import PlannedStage, plan, run_stage
from nuner_core.store import ArtifactStore, open_store


def overrides(tiny_benchmark, encoders, **extra):
    return {
        "evaluate.encoders": encoders,
        "evaluate.benchmarks": [{"name": "tiny", "source": {"kind": "files", **tiny_benchmark}}],
        "evaluate.max_test_sentences": 30,
        "evaluate.frozen.ks": [1, 2],
        "evaluate.frozen.seeds": 2,
        "evaluate.num_threads": 1,
        **extra,
    }


def evaluate(store: ArtifactStore, config, inputs=None):
    if inputs is None:
        (step,) = plan(config, ["evaluate"], store)
    else:  # an explicit pretrain input, independent of the other stages' planning
        step = PlannedStage(stage="evaluate", key="explicitinputs", config=config, inputs=inputs,
                            upstream_keys={k: v.key for k, v in inputs.items()})
    ref = run_stage(step, {}, store)
    return ref, ref.manifest()


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return open_store(tmp_path / "data")


def test_compares_encoders_and_reuses_caches(store, tiny_encoders, tiny_benchmark):
    two = [{"name": "a", "model": tiny_encoders["a"]}, {"name": "a-random", "model": tiny_encoders["a"], "random_init": True}]
    ref, manifest = evaluate(store, load_config("demo", overrides(tiny_benchmark, two)))

    results = pl.read_parquet(ref.dir / "results.parquet")
    assert results.height == 2 * 2 * 2  # encoders x k x seeds
    assert set(results["encoder"]) == {"a", "a-random"}
    assert set(results["metric"]) == {"token_macro_f1"}
    assert results["value"].is_between(0, 1).all()
    assert results.filter(pl.col("is_base"))["encoder"].unique().to_list() == ["a"]
    per_type = results["per_type"][0].to_list()
    assert {"type", "precision", "recall", "f1", "support", "predicted"} <= set(per_type[0])
    assert results["test_sentences"].unique().to_list() == [30]

    support = pl.read_parquet(ref.dir / "support_sets.parquet")
    assert support.select("k", "seed").unique().height == 4
    summary = (ref.dir / "summary.md").read_text()
    assert "| tiny | a (base) |" in summary and "| **average** | a-random |" in summary
    assert "30 of 40 (seeded subsample)" in summary
    assert (ref.dir / "f1_vs_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kinds = {r["kind"]: r for r in manifest["reports"]}
    assert kinds["markdown"]["content"] == summary and kinds["image"]["content"] == "f1_vs_k.png"
    assert manifest["evaluate"]["base"] == "a"
    first = manifest["evaluate"]["encoding"]
    assert first["cached_sentences"] == 0 and first["sentences"] > 0

    # A third encoder: only its sentences are encoded; support sets and the others' features come from the cache.
    three = two + [{"name": "b", "model": tiny_encoders["b"]}]
    ref2, manifest2 = evaluate(store, load_config("demo", overrides(tiny_benchmark, three)))
    assert ref2.key != ref.key
    again = manifest2["evaluate"]["encoding"]
    assert again["sentences"] == first["sentences"] / 2  # one new encoder of the same size as each old one
    assert again["cached_sentences"] == first["sentences"]
    assert manifest2["evaluate"]["support_sets_from_cache"] == 4
    old = results.sort(["encoder", "k", "seed"])["value"]
    new = pl.read_parquet(ref2.dir / "results.parquet").filter(pl.col("encoder") != "b").sort(["encoder", "k", "seed"])["value"]
    assert old.to_list() == new.to_list()  # same features, same support sets, same deterministic probe


def test_pretrain_artifact_encoders_and_base(store, tiny_encoders, tiny_benchmark):
    """The latest pretrain artifact is taken by reference: its encoders plus its base; duplicates merge."""
    manifest = {"stage": "pretrain", "key": "fake", "base_model": tiny_encoders["a"],
                "encoders": {"nuner": "text_encoder", "control-shuffle": "controls/shuffle/text_encoder"}}
    with store.publish("pretrain", "fakepretrain", manifest) as out:
        shutil.copytree(tiny_encoders["b"], out / "text_encoder")
        shutil.copytree(tiny_encoders["c"], out / "controls" / "shuffle" / "text_encoder")
    pretrain = store.lookup("pretrain", "fakepretrain")
    configured = [{"name": "same-as-base", "model": tiny_encoders["a"]}]
    config = load_config("demo", overrides(tiny_benchmark, configured, **{"evaluate.frozen.ks": [1], "evaluate.frozen.seeds": 1}))
    ref, manifest = evaluate(store, config, inputs={"pretrain": pretrain})

    assert manifest["upstream"] == {"pretrain": "fakepretrain"}
    info = manifest["evaluate"]
    assert info["base"] == "base"
    names = [e["name"] for e in info["encoders"]]
    assert names[0] == "base" and sorted(names[1:]) == ["control-shuffle", "nuner"]
    assert info["merged_encoders"] == {"same-as-base": "base"}
    results = pl.read_parquet(ref.dir / "results.parquet")
    assert sorted(results["encoder"].unique()) == ["base", "control-shuffle", "nuner"]
    assert "vs base" in " ".join(manifest["headline"])


def test_rerun_alone_takes_the_latest_pretrain_artifact(store, tiny_encoders, tiny_benchmark):
    """stages=["evaluate"] plans no earlier stage and finds the pretrain artifact in the store."""
    with store.publish("pretrain", "latestpretrain", {"base_model": tiny_encoders["a"], "encoders": {"nuner": "enc"}}) as out:
        shutil.copytree(tiny_encoders["b"], out / "enc")
    config = load_config("demo", overrides(tiny_benchmark, [], **{"evaluate.frozen.ks": [1], "evaluate.frozen.seeds": 1}))
    steps = plan(config, ["evaluate"], store)
    assert [s.stage for s in steps] == ["evaluate"]
    assert steps[0].inputs["pretrain"].key == "latestpretrain"


def test_finetune_protocol(store, tiny_encoders, tiny_benchmark):
    config = load_config("demo", overrides(
        tiny_benchmark, [{"name": "a", "model": tiny_encoders["a"]}],
        **{"evaluate.frozen.enabled": False, "evaluate.finetune.enabled": True, "evaluate.finetune.ks": [1],
           "evaluate.finetune.seeds": 1, "evaluate.finetune.epochs": 1, "evaluate.finetune.benchmarks": None},
    ))
    ref, manifest = evaluate(store, config)
    results = pl.read_parquet(ref.dir / "results.parquet")
    assert results["protocol"].to_list() == ["finetune"] and results["metric"].to_list() == ["entity_micro_f1"]
    assert 0 <= results["value"][0] <= 1
    assert (ref.dir / "f1_vs_k.png").exists()
    assert "entity-level micro-F1" in (ref.dir / "summary.md").read_text()


def test_malformed_benchmark_names_file_and_line(store, tiny_encoders, tiny_benchmark, tmp_path):
    bad = tmp_path / "bad.bio"
    bad.write_text("a O\nb B-X\nc\n")
    config = load_config("demo", overrides({"train": str(bad), "test": tiny_benchmark["test"]},
                                           [{"name": "a", "model": tiny_encoders["a"]}]))
    with pytest.raises(ConllFormatError, match=f"{bad}:3:"):
        evaluate(store, config)
    assert not (store.root / "evaluate").exists() or not any(p for p in (store.root / "evaluate").iterdir() if not p.name.startswith("."))


def test_shipped_profiles_configure_the_stage():
    demo, paper = load_config("demo").evaluate, load_config("paper").evaluate
    assert set(demo.frozen.ks) >= {1, 4, 16} and demo.frozen.seeds >= 5 and len(demo.benchmarks) >= 3
    assert paper.frozen.ks == (1, 2, 4, 8, 16, 32, 64) and paper.frozen.seeds == 10
    assert all(str(b).startswith("tner/") for b in paper.benchmarks)
    with pytest.raises(Exception, match="unique"):
        load_config("demo", {"evaluate.encoders": [{"name": "x", "model": "m"}, {"name": "x", "model": "n"}]})
    with pytest.raises(Exception, match="finetune.benchmarks"):
        load_config("demo", {"evaluate.finetune.enabled": True, "evaluate.finetune.benchmarks": ["nope"]})


def test_results_parquet_is_json_friendly(store, tiny_encoders, tiny_benchmark):
    """The manifest (with shortfalls, timings, encoder identities) is plain JSON."""
    config = load_config("demo", overrides(tiny_benchmark, [{"name": "a", "model": tiny_encoders["a"]}],
                                           **{"evaluate.frozen.ks": [64], "evaluate.frozen.seeds": 1}))
    ref, manifest = evaluate(store, config)
    json.dumps(manifest)
    shortfalls = manifest["evaluate"]["shortfalls"]
    assert shortfalls and shortfalls[0]["k"] == 64  # 120 sentences cannot give 64 mentions of every type
    results = pl.read_parquet(Path(ref.path) / "results.parquet")
    assert results["shortfall"][0].len() > 0
    assert "fell short" in (ref.dir / "summary.md").read_text()


def _dual(out: Path, text: str, concept: str, threshold: float | None) -> None:
    shutil.copytree(text, out / "text_encoder")
    shutil.copytree(concept, out / "concept_encoder")
    settings = {"similarity": "cosine", "temperature": 5.0, "logit_bias": -1.0, "pooling": "mean"}
    if threshold is not None:
        settings["threshold"] = threshold
    (out / "dual_encoder.json").write_text(json.dumps(settings))


def test_zero_shot_protocol_scores_every_dual_encoder_at_k0(store, tiny_encoders, tiny_benchmark):
    """Each two-encoder model of the pretrain artifact (controls too) tags the test set from the type names:
    token macro-F1 as the frozen table's k = 0 column, entity micro-F1 beside it, the stored threshold used,
    the test-set optimum reported only as an upper bound."""
    manifest = {"stage": "pretrain", "key": "zs", "base_model": tiny_encoders["a"],
                "encoders": {"nuner": "text_encoder", "control-shuffle": "controls/shuffle/text_encoder"}}
    with store.publish("pretrain", "zspretrain", manifest) as out:
        _dual(out, tiny_encoders["b"], tiny_encoders["c"], threshold=0.3)
        _dual(out / "controls" / "shuffle", tiny_encoders["c"], tiny_encoders["b"], threshold=None)
    pretrain = store.lookup("pretrain", "zspretrain")
    config = load_config("demo", overrides(tiny_benchmark, [], **{"evaluate.frozen.ks": [1], "evaluate.frozen.seeds": 1,
                                                                 "evaluate.zero_shot.labels": {"tiny": {"Hours": "opening hours"}}}))
    ref, manifest = evaluate(store, config, inputs={"pretrain": pretrain})
    results = pl.read_parquet(ref.dir / "results.parquet")
    zero = results.filter(pl.col("protocol").str.starts_with("zero_shot"))
    assert sorted(zip(zero["encoder"], zero["protocol"], zero["metric"])) == [
        ("control-shuffle", "zero_shot", "token_macro_f1"), ("control-shuffle", "zero_shot_entity", "entity_micro_f1"),
        ("nuner", "zero_shot", "token_macro_f1"), ("nuner", "zero_shot_entity", "entity_micro_f1")]
    assert set(zero["k"]) == {0} and zero["value"].is_between(0, 1).all()
    fixed = {r["model"]: r for r in manifest["evaluate"]["zero_shot"]}
    assert fixed["nuner"]["threshold"] == 0.3 and fixed["nuner"]["source"] == "calibrated"
    assert fixed["control-shuffle"]["source"] == "default"
    assert fixed["nuner"]["labels"]["Hours"] == "opening hours" and fixed["nuner"]["labels"]["Restaurant_Name"] == "restaurant name"
    assert fixed["nuner"]["best_token_macro_f1"] >= fixed["nuner"]["token_macro_f1"]  # the optimum over a grid including 0.3
    summary = (ref.dir / "summary.md").read_text()
    assert "| k=0 | k=1 |" in summary  # the frozen table starts at the zero-shot point
    assert "upper bound" in summary and "zero_shot_entity" in summary
    assert "`nuner serve --model nuner=pretrain:zspretrain`" in summary
    assert (ref.dir / "f1_vs_threshold.png").stat().st_size > 1000
    curve = pl.read_parquet(ref.dir / "zero_shot_thresholds.parquet")
    assert curve.height == 2 * len(curve["threshold"].unique())


def test_zero_shot_backends_side_by_side_from_an_export_in_the_cache(store, tiny_encoders, tiny_benchmark):
    """evaluate.zero_shot.backends: the int8 rows beside the torch ones in the tables; the export in the cache, not the artifact."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    manifest = {"stage": "pretrain", "key": "zsb", "base_model": tiny_encoders["a"], "encoders": {"nuner": "text_encoder"}}
    with store.publish("pretrain", "zsbackends", manifest) as out:
        _dual(out, tiny_encoders["b"], tiny_encoders["c"], threshold=0.3)
    pretrain = store.lookup("pretrain", "zsbackends")
    files = sorted(p.relative_to(pretrain.dir) for p in pretrain.dir.rglob("*"))
    config = load_config("demo", overrides(tiny_benchmark, [], **{"evaluate.frozen.ks": [1], "evaluate.frozen.seeds": 1,
                                                                 "evaluate.zero_shot.backends": ["torch", "onnx-int8"]}))
    ref, manifest = evaluate(store, config, inputs={"pretrain": pretrain})
    zero = pl.read_parquet(ref.dir / "results.parquet").filter(pl.col("protocol") == "zero_shot_entity")
    assert sorted(zero["encoder"]) == ["nuner", "nuner (onnx-int8)"]
    summary = (ref.dir / "summary.md").read_text()
    assert "| **average** | nuner | " in summary and "| **average** | nuner (onnx-int8) | " in summary
    assert "backends: torch, onnx-int8" in summary
    assert sorted(p.relative_to(pretrain.dir) for p in pretrain.dir.rglob("*")) == files  # nothing written into the artifact
    assert len(list((Path(manifest["evaluate"]["cache_dir"]) / "zero_shot_onnx").iterdir())) == 1


def test_zero_shot_off_or_without_a_concept_encoder_adds_nothing(store, tiny_encoders, tiny_benchmark):
    config = load_config("demo", overrides(tiny_benchmark, [{"name": "a", "model": tiny_encoders["a"]}],
                                           **{"evaluate.frozen.ks": [1], "evaluate.frozen.seeds": 1, "evaluate.use_pretrain": False}))
    ref, manifest = evaluate(store, config)
    assert set(pl.read_parquet(ref.dir / "results.parquet")["protocol"]) == {"frozen"}
    assert manifest["evaluate"]["zero_shot"] == [] and not (ref.dir / "f1_vs_threshold.png").exists()
