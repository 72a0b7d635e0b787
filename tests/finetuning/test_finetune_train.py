"""The training loop: exact resume after a kill, early stopping, seeded runs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from finetune_helpers import write_jsonl

from nuner_core import checkpoint as ckpt
from nuner_core.finetuning.config import FilesData, FinetuneConfig
from nuner_core.finetuning.data import load_data
from nuner_core.stage_api import LogProgress, StageError
from nuner_core.token_classifier.train import SUMMARY, RunSpec, train_run


class Killed(Exception):
    pass


class KillAt(LogProgress):
    def __init__(self, step: int):
        super().__init__("test", every_s=1e9)
        self.step = step

    def update(self, done, total, note=""):
        if done >= self.step:
            raise Killed(note)


def config(files, dev: bool, **over) -> FinetuneConfig:
    data = FilesData(train=str(files["train"]), dev=str(files["dev"]) if dev else None, test=str(files["test"]))
    return FinetuneConfig(**({"data": data, "epochs": 4, "batch_size": 6, "lr": 1e-3, "head_lr": 5e-3, "max_length": 32, "stride": 8,
                              "log_every": 1, "checkpoint_every": 3, "num_threads": 1} | over))  # fmt: skip


@pytest.mark.parametrize("dev", [True, False], ids=["dev-early-stopping", "no-dev-last-weights"])
def test_resume_after_a_kill_gives_the_same_weights_and_history(tmp_path, toy_files, tiny_model_dir, dev):
    cfg = config(toy_files, dev)
    data = load_data(cfg.data, "snap")
    spec = RunSpec("nuner", tiny_model_dir, seed=3)
    straight = train_run(cfg.training(), spec, data, tmp_path / "straight")
    # 40 sentences / 6 = 7 steps per epoch; killed at step 11: the last checkpoint is step 9 (every 3), mid-epoch 2
    with pytest.raises(Killed):
        train_run(cfg.training(), spec, data, tmp_path / "killed", KillAt(11))
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "killed" / "checkpoints")] == ["step_00000009.pt"]
    resumed = train_run(cfg.training(), spec, data, tmp_path / "killed")
    assert resumed["resumed_from_step"] == 9 and straight["resumed_from_step"] is None
    assert straight["steps"] == 28 and not straight["stopped_early"]  # all epochs: patience (5) never ran out
    first = ckpt.load(tmp_path / "straight" / straight["weights"])
    second = ckpt.load(tmp_path / "killed" / resumed["weights"])
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert straight["selected_step"] == resumed["selected_step"] and straight["test"] == resumed["test"]
    untimed = [[{k: v for k, v in json.loads(r).items() if k != "windows_per_s"} for r in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
               for run in ("straight", "killed")]  # fmt: skip
    assert untimed[0] == untimed[1]  # the same losses, learning rates, gradient norms and dev scores at every step
    assert [r["step"] for r in untimed[0] if r["kind"] == "train"] == list(range(1, 29))
    assert not ckpt.list_checkpoints(tmp_path / "killed" / "checkpoints")  # a finished run keeps only its weights
    dev_rows = [r for r in untimed[0] if r["kind"] == "dev"]
    assert len(dev_rows) == (4 if dev else 0)
    assert straight["selected_step"] == (max(dev_rows, key=lambda r: (r["f1"], -r["loss"]))["step"] if dev else 28)
    assert train_run(cfg.training(), spec, data, tmp_path / "killed", KillAt(0)) == resumed  # finished: summary.json, no training
    assert (tmp_path / "killed" / SUMMARY).is_file()


def test_early_stopping_and_seeds(tmp_path, toy_files, tiny_model_dir):
    # A dev set whose labels are rotated (person -> city -> day -> person): the better the model learns train, the
    # worse it does on dev, so F1 stays low and the dev loss rises: the run stops `patience` epochs after its best.
    rotate = {"person": "city", "city": "day", "day": "person"}
    records = [json.loads(line) for line in toy_files["dev"].read_text().splitlines()]
    for r in records:
        r["entities"] = [e | {"label": rotate[e["label"]]} for e in r["entities"]]
    write_jsonl(toy_files["dev"], records)
    cfg = config(toy_files, dev=True, epochs=30, lr=3e-3, head_lr=1e-2, patience=2)
    data = load_data(cfg.data, "snap")
    summary = train_run(cfg.training(), RunSpec("base", tiny_model_dir, seed=0), data, tmp_path / "a")
    dev = [json.loads(r) for r in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines() if '"dev"' in r]
    assert summary["stopped_early"] and summary["steps"] < summary["total_steps"]
    best = max(range(len(dev)), key=lambda i: (dev[i]["f1"], -dev[i]["loss"]))
    assert len(dev) == best + 1 + 2  # stopped after `patience` epochs without a better (F1, -loss)
    assert summary["selected_step"] == dev[best]["step"]
    other = train_run(config(toy_files, dev=True, epochs=1).training(), RunSpec("base", tiny_model_dir, seed=1), data, tmp_path / "b")
    again = train_run(config(toy_files, dev=True, epochs=1).training(), RunSpec("base", tiny_model_dir, seed=1), data, tmp_path / "c")
    assert other["test"] == again["test"] and other["dev_loss"] == again["dev_loss"]  # seeded


class _Planted:
    """Unpickling it runs ``open(marker, "w").write(...)``: what a hostile ``step_*.pt`` pulled from the bucket would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_a_planted_checkpoint_is_refused_in_one_line_without_running_its_code(tmp_path, toy_files, tiny_model_dir):
    cfg = config(toy_files, dev=True, epochs=1)
    marker, planted = tmp_path / "pwned", tmp_path / "run" / "checkpoints" / "step_00000003.pt"
    planted.parent.mkdir(parents=True)
    torch.save({"model": _Planted(marker), "layout": {}, "state": {}}, planted)
    with pytest.raises(StageError) as caught:
        train_run(cfg.training(), RunSpec("nuner", tiny_model_dir, seed=3), load_data(cfg.data, "snap"), tmp_path / "run")
    assert not marker.exists()  # the pickled code never ran
    message = str(caught.value)
    assert "\n" not in message and str(planted) in message and "refused" in message and "start" in message
    assert planted.is_file()  # refused, not deleted: the user decides


def test_a_non_finite_loss_stops_the_training_naming_the_step(tmp_path, toy_files, tiny_model_dir, monkeypatch):
    from nuner_core.token_classifier import train as loop

    calls, real = [], loop.token_loss

    def diverging(logits, labels):  # the 5th training step's loss is NaN: a diverging run
        calls.append(1)
        return real(logits, labels) * (math.nan if len(calls) == 5 else 1.0)

    monkeypatch.setattr(loop, "token_loss", diverging)
    cfg = config(toy_files, dev=True, epochs=1)
    with pytest.raises(StageError, match=r"^fine-tuning nuner seed 3: the training loss is nan at step 5 of 7; training stopped"):
        train_run(cfg.training(), RunSpec("nuner", tiny_model_dir, seed=3), load_data(cfg.data, "snap"), tmp_path / "run")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step_00000003.pt"]  # none of NaN weights
