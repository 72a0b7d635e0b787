"""Run one training in this process, or in ``nproc`` processes through torchrun (DDP).

With ``nproc > 1`` (and not already inside torchrun) the stage writes a small JSON spec and
starts ``python -m torch.distributed.run --standalone --nproc_per_node N -m
nuner_core.pretraining.worker spec.json``; progress is read back from the run's metrics.jsonl,
the result from its summary.json, the workers' output goes to ``torchrun.log``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nuner_core.jsonl import read_json_objects
from nuner_core.pretraining import distributed
from nuner_core.pretraining.config import PretrainConfig
from nuner_core.pretraining.train import METRICS, SUMMARY, train
from nuner_core.stage_api import Progress, StageError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def run_training(
    cfg: PretrainConfig, data_path: Path, work_dir: Path, out_dir: Path, control: str | None, progress: Progress, poll_s: float = 2.0
) -> dict[str, Any]:
    if cfg.nproc == 1 or distributed.under_torchrun():
        return train(cfg, data_path, work_dir, out_dir, control, progress)
    work_dir.mkdir(parents=True, exist_ok=True)
    spec = work_dir / "launch.json"
    spec.write_text(
        json.dumps(
            {
                "config": cfg.model_dump(mode="json"),
                "data_path": str(data_path),
                "work_dir": str(work_dir),
                "out_dir": str(out_dir),
                "control": control,
            }
        )
    )
    (work_dir / SUMMARY).unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.nproc}",
        "-m", "nuner_core.pretraining.worker", str(spec),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}
    log_path = work_dir / "torchrun.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            _report(work_dir / METRICS, progress)
            time.sleep(poll_s)
    _report(work_dir / METRICS, progress)
    if proc.returncode != 0 or not (work_dir / SUMMARY).is_file():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise StageError(f"torchrun with {cfg.nproc} processes failed (exit {proc.returncode}); {log_path} ends with:\n{tail}")
    summary: dict[str, Any] = json.loads((work_dir / SUMMARY).read_text())
    return summary


def _report(metrics: Path, progress: Progress) -> None:
    if not metrics.is_file():
        return
    rows = read_json_objects(metrics)
    train_rows = [r for r in rows if r.get("kind") == "train"]
    if train_rows:
        r = train_rows[-1]
        progress.update(r["step"], r["total_steps"], f"loss {r['loss']:.4f} · {r['tokens_per_s']:,.0f} tok/s")
