"""The finetune stage's run() called directly with a hand-built StageContext: products, scores, reports, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForTokenClassification, AutoTokenizer

from nuner_core.finetuning import stage
from nuner_core.finetuning.config import FilesData, FinetuneConfig
from nuner_core.stage_api import LogProgress, StageContext, StageError
from nuner_core.store import ArtifactRef
from nuner_core.text.words import SEGMENTATION


class Killed(Exception):
    pass


class KillAt(LogProgress):
    """Raises once the combined progress over all runs reaches ``done``."""

    def __init__(self, done: int):
        super().__init__("test", every_s=1e9)
        self.done = done

    def update(self, done, total, note=""):
        if done >= self.done:
            raise Killed(note)


def fake_pretrain(root: Path, nuner_dir: str, base: str) -> ArtifactRef:
    """A pretrain artifact as the stage reads it: manifest base_model + encoders, a text encoder directory."""
    import shutil

    shutil.copytree(nuner_dir, root / "text_encoder")
    (root / "manifest.json").write_text(json.dumps({"stage": "pretrain", "key": "fake", "base_model": base, "encoders": {"nuner": "text_encoder"}}))
    return ArtifactRef("pretrain", "fake", str(root))


def context(tmp_path: Path, config: FinetuneConfig, inputs: dict, progress=None) -> StageContext:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return StageContext(config=config, inputs=inputs, out_dir=out, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache",
                        progress=progress or LogProgress("test", every_s=1e9), key="k")  # fmt: skip


def small_config(files: dict[str, Path], **over) -> FinetuneConfig:
    base = dict(
        data=FilesData(train=str(files["train"]), dev=str(files["dev"]), test=str(files["test"])),
        seeds=(0, 1), epochs=3, batch_size=8, lr=1e-3, head_lr=5e-3, max_length=32, stride=8, log_every=1, num_threads=1,
    )  # fmt: skip
    return FinetuneConfig(**(base | over))


def test_hooks_upstream_fingerprint_describe(toy_files, tiny_model_dir):
    from_pretrain = small_config(toy_files)
    assert stage.upstream(from_pretrain) == ("pretrain",)
    configured = small_config(toy_files, encoder=tiny_model_dir, base=tiny_model_dir)
    assert stage.upstream(configured) == ()
    first = stage.fingerprint(configured)
    assert set(first["data"]) == {"train", "dev", "test"} and set(first["encoders"]) == {"nuner", "base"}
    toy_files["dev"].write_text(toy_files["dev"].read_text() + '{"text": "Bob ran.", "entities": []}\n')
    assert stage.fingerprint(configured)["data"]["dev"] != first["data"]["dev"]  # contents, not names
    assert "3 epochs" in stage.describe(configured, {}) and "train.jsonl" in stage.describe(configured, {})
    assert stage.fingerprint(FinetuneConfig())["data"] is None
    with pytest.raises(ValueError, match="set base"):
        FinetuneConfig(encoder=tiny_model_dir)


def test_stage_run_products_scores_reports_and_resume(tmp_path, toy_files, tiny_model_dir, tiny_model_b):
    pretrain = fake_pretrain(tmp_path / "pretrain", tiny_model_b, base=tiny_model_dir)
    cfg = small_config(toy_files, export_onnx=True)
    # Killed in the third run (base, seed 0): nuner's two runs are finished and kept, base resumes mid-run.
    with pytest.raises(Killed):
        stage.run(context(tmp_path, cfg, {"pretrain": pretrain}, KillAt(2 * 15 + 8)))
    result = stage.run(context(tmp_path, cfg, {"pretrain": pretrain}))
    out = tmp_path / "out"

    runs = {(r["name"], r["seed"]): r for r in result.extra["runs"]}
    assert set(runs) == {("nuner", 0), ("nuner", 1), ("base", 0), ("base", 1)}
    assert runs[("nuner", 0)]["resumed_from_step"] is None and runs[("base", 0)]["resumed_from_step"] == 5
    assert result.extra["encoders"] == {"nuner": str(tmp_path / "pretrain" / "text_encoder"), "base": tiny_model_dir}
    assert result.rows == {"train_sentences": 40, "dev_sentences": 12, "test_sentences": 12, "entity_types": 3, "runs": 4}
    assert result.extra["labels"] == ["O", "B-city", "I-city", "B-day", "I-day", "B-person", "I-person"]
    assert result.dropped == {}
    for key in ("test_f1", "test_f1_std", "base_test_f1", "base_test_f1_std", "test_f1_gain", "selected_seed", "onnx_max_abs_logit_diff"):
        assert key in result.headline
    assert result.headline["onnx_max_abs_logit_diff"] < 1e-4
    assert {r.kind for r in result.reports} == {"markdown", "table", "image"}
    table = next(r for r in result.reports if r.kind == "table").content
    assert [row["type"] for row in table] == ["micro (all types)", "city", "day", "person"]
    assert {"base_f1", "nuner_f1", "delta"} <= set(table[0])

    for product in ("model", "base_model"):
        model = AutoModelForTokenClassification.from_pretrained(out / product)
        assert model.config.id2label[1] == "B-city" and model.config.label2id["I-person"] == 6
        AutoTokenizer.from_pretrained(out / product)
        assert json.loads((out / product / "nuner_finetune.json").read_text())["segmentation"] == SEGMENTATION  # nuner predict's words
        card = (out / product / "README.md").read_text()
        assert "pipeline_tag: token-classification" in card and "entity micro-F1" in card
    assert (out / "model" / "model.onnx").is_file() and not (out / "base_model" / "model.onnx").exists()
    assert (out / "loss_curve.png").stat().st_size > 5000
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {(r["run"], r["seed"]) for r in rows} == set(runs)
    assert sum(1 for r in rows if r["kind"] == "dev" and r["run"] == "base" and r["seed"] == 0) == 3
    saved = json.loads((out / "results.json").read_text())
    assert saved["split"] == "test" and len(saved["runs"]) == 4
    assert saved["aggregate"]["nuner"]["f1_mean"] == pytest.approx(result.headline["test_f1"])


def test_stage_errors_name_what_to_do(tmp_path, toy_files, tiny_model_dir):
    with pytest.raises(StageError, match="finetune.data is not configured"):
        stage.run(context(tmp_path, FinetuneConfig(encoder=tiny_model_dir, compare_base=False), {}))
    with pytest.raises(StageError, match="run the pretrain stage first"):
        stage.run(context(tmp_path, small_config(toy_files), {}))
