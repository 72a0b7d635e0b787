"""With the store on S3 (moto): pre-training stopped on machine a resumes on machine b from the checkpoint a pushed."""

from __future__ import annotations

import pytest
import torch
from pretrain_helpers import toy_rows, write_annotated

from nuner_core.config import load_config
from nuner_core.pipeline import plan, run_stage
from nuner_core.stage_api import LogProgress, StageError
from nuner_core.store import open_store


class Killed(Exception):
    pass


class KillAt(LogProgress):
    def __init__(self, done: int):
        super().__init__("test", every_s=1e9)
        self.done = done

    def update(self, done, total, note=""):
        if done >= self.done:
            raise Killed(note)


def test_pretraining_resumes_on_another_machine(s3_bucket, tmp_path, tiny_model_dir):
    a = open_store(s3_bucket, local_dir=tmp_path / "machine-a")
    b = open_store(s3_bucket, local_dir=tmp_path / "machine-b")
    with a.publish("dataset", "toy", {"stage": "dataset"}) as out:
        write_annotated(out / "annotated.parquet", toy_rows())
    overrides = {
        "pretrain.base_model": tiny_model_dir,
        "pretrain.batch_size": 4,
        "pretrain.epochs": 2,
        "pretrain.freeze_layers": 1,
        "pretrain.max_length": 32,
        "pretrain.checkpoint_every": 2,
        "pretrain.log_every": 1,
        "pretrain.num_threads": 1,
        "pretrain.controls": [],
        "pretrain.concept_map": False,
    }
    (step,) = plan(load_config("demo", overrides), ["pretrain"], a)
    with pytest.raises(Killed):
        run_stage(step, {}, a, KillAt(7))  # after the checkpoint of step 6
    work = f"pretrain/.work/{step.key}"
    assert "main/checkpoints/step_00000006.pt" in a.objects.list_files(work)  # pushed on the way out
    assert a.lookup("pretrain", step.key) is None

    (step_b,) = plan(load_config("demo", overrides), ["pretrain"], b)  # machine b: its own plan, an empty disk
    ref = run_stage(step_b, {}, b)
    assert ref.manifest()["runs"]["nuner"]["resumed_from_step"] == 6 and ref.manifest()["headline"]["steps"] == 10
    assert not a.objects.list_files(work)  # final: nothing left to resume


class _Planted:
    """Unpickling it runs ``open(marker, "w").write(...)``: what a hostile ``step_*.pt`` in the bucket would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_a_checkpoint_planted_in_the_bucket_is_refused_without_running_its_code(s3_bucket, tmp_path, tiny_model_dir):
    store = open_store(s3_bucket, local_dir=tmp_path / "worker")
    with store.publish("dataset", "toy", {"stage": "dataset"}) as out:
        write_annotated(out / "annotated.parquet", toy_rows())
    overrides = {"pretrain.base_model": tiny_model_dir, "pretrain.batch_size": 4, "pretrain.epochs": 1, "pretrain.freeze_layers": 1, "pretrain.max_length": 32,
                 "pretrain.num_threads": 1, "pretrain.controls": [], "pretrain.concept_map": False}  # fmt: skip
    (step,) = plan(load_config("demo", overrides), ["pretrain"], store)
    marker = tmp_path / "pwned"
    planted = tmp_path / "planted.pt"
    torch.save({"model": _Planted(marker), "layout": {}, "state": {}}, planted)
    store.objects.upload([(planted, f"pretrain/.work/{step.key}/main/checkpoints/step_00000006.pt")])
    with pytest.raises(StageError) as caught:
        run_stage(step, {}, store)
    assert not marker.exists()  # the pickled code never ran
    message = str(caught.value)
    assert "\n" not in message and "step_00000006.pt" in message and "refused" in message and "start" in message
