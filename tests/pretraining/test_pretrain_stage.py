"""The pretrain stage through the pipeline's run_stage: products, manifest contract, controls, resume."""

from __future__ import annotations

import json

import pytest
from pretrain_helpers import toy_rows, write_annotated
from transformers import AutoModel, AutoTokenizer

from nuner_core.config import load_config
from nuner_core.pipeline import plan, run_stage
from nuner_core.stage_api import LogProgress
from nuner_core.store import open_store


class Killed(Exception):
    pass


class KillAt(LogProgress):
    """Raises once the combined progress (main run, then controls) reaches ``done``."""

    def __init__(self, done: int):
        super().__init__("test", every_s=1e9)
        self.done = done

    def update(self, done, total, note=""):
        if done >= self.done:
            raise Killed(note)


@pytest.fixture()
def store(tmp_path):
    store = open_store(tmp_path / "data")
    with store.publish("dataset", "toy", {"stage": "dataset"}) as out:
        write_annotated(out / "annotated.parquet", toy_rows())
    return store


def test_stage_products_manifest_controls_and_resume(store, tiny_model_dir):
    overrides = {
        "pretrain.base_model": tiny_model_dir,
        "pretrain.batch_size": 4,
        "pretrain.epochs": 2,
        "pretrain.freeze_layers": 1,
        "pretrain.max_length": 32,
        "pretrain.checkpoint_every": 2,
        "pretrain.log_every": 1,
        "pretrain.num_threads": 1,
        "pretrain.controls": ["shuffle_concepts"],
    }
    config = load_config("demo", overrides)
    (step,) = plan(config, ["pretrain"], store)
    assert step.inputs["dataset"].key == "toy"
    with pytest.raises(Killed):  # killed in the control run, after the main run finished
        run_stage(step, {}, store, KillAt(10 + 3))
    assert store.lookup("pretrain", step.key) is None  # no half artifact
    ref = run_stage(step, {}, store)
    manifest = ref.manifest()
    runs = manifest["runs"]
    assert runs["nuner"]["resumed_from_step"] == 10 and runs["control-shuffle_concepts"]["resumed_from_step"] == 2
    assert manifest["base_model"] == tiny_model_dir
    assert manifest["encoders"] == {"nuner": "text_encoder", "control-shuffle_concepts": "controls/shuffle_concepts/text_encoder"}
    for rel in manifest["encoders"].values():
        AutoModel.from_pretrained(ref.dir / rel)
        AutoTokenizer.from_pretrained(ref.dir / rel)
    AutoModel.from_pretrained(ref.dir / "concept_encoder")
    assert manifest["rows"] == {"train_sentences": 21, "validation_sentences": 3, "concepts": 11}
    assert manifest["headline"]["steps"] == 10 and manifest["headline"]["tokens_seen"] > 0
    assert manifest["headline"]["final_val_loss"] is not None
    assert manifest["counts"]["train_sentences_skipped_per_epoch"] == 1
    assert {r["kind"] for r in manifest["reports"]} == {"image", "table"}
    assert (ref.dir / "loss_curve.png").stat().st_size > 1000
    assert (ref.dir / "checkpoints" / "step_00000010.pt").is_file()
    rows = [json.loads(line) for line in (ref.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 11))
    assert json.loads((ref.dir / "dual_encoder.json").read_text())["similarity"] == "cosine"
    # every run directory is a zero-shot tagger: threshold calibrated on the validation split, a model card
    for name, run_dir in (("nuner", ref.dir), ("control-shuffle_concepts", ref.dir / "controls" / "shuffle_concepts")):
        settings = json.loads((run_dir / "dual_encoder.json").read_text())
        assert settings["threshold"] == manifest["zero_shot"][name]["threshold"]
        assert 0 < settings["threshold"] < 1 and settings["max_concept_length"] == 16
        assert 0 < manifest["zero_shot"][name]["validation_sentences"] <= 3  # the validation sentences with a concept
        assert "nuner tag" in (run_dir / "README.md").read_text() or "ZeroShotTagger" in (run_dir / "README.md").read_text()
    assert run_stage(step, {}, store).path == ref.path  # cached: not trained again
