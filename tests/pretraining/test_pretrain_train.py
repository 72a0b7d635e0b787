"""The training loop on a tiny model: it learns, resumes exactly, and runs under DDP (gloo, 2 processes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from nuner_core.pretraining.config import PretrainConfig
from nuner_core.pretraining.launch import run_training
from nuner_core.pretraining.train import METRICS, train
from nuner_core.stage_api import LogProgress, StageError


def tiny_config(model_dir: str, **overrides) -> PretrainConfig:
    settings = dict(
        base_model=model_dir, batch_size=4, epochs=2, freeze_layers=1, lr=3e-3, bias_lr=3e-2, max_length=32,
        log_every=1, checkpoint_every=3, num_threads=1, bucket_batches=2,
    )  # fmt: skip
    return PretrainConfig(**{**settings, **overrides})


def losses(work_dir: Path, kind: str = "train") -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (work_dir / METRICS).read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["kind"] == kind]


def test_loss_decreases_on_a_toy_set(tiny_model_dir, toy_data, tmp_path):
    cfg = tiny_config(tiny_model_dir, epochs=8, freeze_layers=0, lr=1e-2, bias_lr=0.1, checkpoint_every=100)
    summary = train(cfg, toy_data, tmp_path / "work", tmp_path / "out")
    val = [loss for _, loss in losses(tmp_path / "work", "val")]
    assert summary["steps"] == 40 and len(val) == 9
    assert val[-1] < 0.8 * val[0], val
    assert summary["best_val_loss"] == min(val)
    assert summary["logit_bias"] != cfg.bias_init  # the bias learns


class Killed(Exception):
    pass


class KillAt(LogProgress):
    def __init__(self, step: int):
        super().__init__("test", every_s=1e9)
        self.step = step

    def update(self, done, total, note=""):
        if done == self.step:
            raise Killed(f"killed after step {done}")


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tiny_model_dir, toy_data, tmp_path):
    cfg = tiny_config(tiny_model_dir, epochs=2, checkpoint_every=3, eval_every=4)  # dropout on: RNG state matters
    train(cfg, toy_data, tmp_path / "a", tmp_path / "a-out")
    with pytest.raises(Killed):
        train(cfg, toy_data, tmp_path / "b", tmp_path / "b-out", progress=KillAt(8))
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step_00000003.pt", "step_00000006.pt"]
    resumed = train(cfg, toy_data, tmp_path / "b", tmp_path / "b-out")
    assert resumed["resumed_from_step"] == 6 and resumed["steps"] == 10
    assert losses(tmp_path / "b") == losses(tmp_path / "a")  # exact, step by step
    assert losses(tmp_path / "b", "val") == losses(tmp_path / "a", "val")
    a = AutoModel.from_pretrained(tmp_path / "a-out" / "text_encoder").state_dict()
    b = AutoModel.from_pretrained(tmp_path / "b-out" / "text_encoder").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run "resumes" straight to export
    again = train(cfg, toy_data, tmp_path / "b", tmp_path / "c-out")
    assert again["resumed_from_step"] == 10 and (tmp_path / "c-out" / "text_encoder" / "config.json").is_file()


def test_ddp_two_processes_gloo_match_one_process_with_accumulation(tiny_model_no_dropout, toy_data, tmp_path):
    cfg = tiny_config(tiny_model_no_dropout, epochs=1, micro_batch_size=2, checkpoint_every=100)
    single = train(cfg, toy_data, tmp_path / "one", tmp_path / "one-out")
    ddp_cfg = cfg.model_copy(update={"nproc": 2})
    ddp = run_training(ddp_cfg, toy_data, tmp_path / "two", tmp_path / "two-out", None, LogProgress("test"), poll_s=0.5)
    assert (single["grad_accum"], ddp["grad_accum"], ddp["world_size"]) == (2, 1, 2)
    assert ddp["tokens_seen"] == single["tokens_seen"]  # each rank saw its own share, together all of it
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _ in one] == [s for s, _ in two]
    assert [loss for _, loss in two] == pytest.approx([loss for _, loss in one], rel=1e-5)
    assert (tmp_path / "two-out" / "text_encoder" / "model.safetensors").is_file()
    AutoTokenizer.from_pretrained(tmp_path / "two-out" / "text_encoder")


def test_a_non_finite_loss_stops_the_training_naming_the_step(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    from nuner_core.pretraining import train as loop

    calls, real = [], loop.concept_bce

    def diverging(*args):  # the 5th training step's loss is inf: a diverging run (validation batches are not counted)
        calls.append(torch.is_grad_enabled())
        return real(*args) * (math.inf if calls.count(True) == 5 and calls[-1] else 1.0)

    monkeypatch.setattr(loop, "concept_bce", diverging)
    cfg = tiny_config(tiny_model_dir, log_every=2, checkpoint_every=2)
    with pytest.raises(StageError, match=r"^pre-training main run: the training loss is (inf|nan) at step 5 of 10; training stopped"):
        train(cfg, toy_data, tmp_path / "work", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "work" / "checkpoints").iterdir()) == ["step_00000002.pt", "step_00000004.pt"]
