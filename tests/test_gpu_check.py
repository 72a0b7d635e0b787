"""scripts/gpu_check.sh: its dry run on CPU (every part but the CUDA calls), the peak table, the summary line."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAST_LINE = re.compile(r"^pretrain_mfu=(\S+) ddp_ok=(\S+) tag_sentences_per_s=(\S+) cuda_cpu_parity=(\S+)$")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_dry_run_writes_the_report_and_the_last_line(tmp_path):
    report_path = tmp_path / "out" / "gpu_report.json"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--report", str(report_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = done.stdout.strip().splitlines()[-1]
    match = LAST_LINE.match(line)
    assert match, line
    mfu, ddp_ok, tag_speed, parity = match.groups()
    assert (mfu, ddp_ok, parity) == ("n/a", "true", "true")
    assert float(tag_speed) > 0
    report = json.loads(report_path.read_text())
    assert report["last_line"] == line and report["mode"] == "dry-run" and report["errors"] == {}
    assert set(report["parts_s"]) == {"inputs", "pretrain", "reference", "tagger", "encoding", "finetune", "ddp"}
    pre = report["pretrain"]
    assert pre["bf16"] and pre["mfu"] is None and "cpu" in pre["mfu_reason"]
    assert pre["steps_timed"] == 4 and pre["text_tokens"] > 0 and pre["concept_tokens"] > 0 and pre["tokens_per_s"] > 0
    assert pre["model_flops"] == pre["text_tokens"] * (6 * pre["params"]["layers_trained"] + 2 * pre["params"]["layers_frozen"]) + (
        pre["concept_tokens"] * 6 * pre["params"]["layers_all"]
    )
    checks = {name: c for part in ("tagger", "encoding", "finetune") for name, c in report[part]["checks"].items()}
    assert set(checks) == set(report["tolerances"]) - {"ddp_bf16", "ddp_fp32"}
    assert all(c["ok"] and c["measured"] <= c["tolerance"] for c in checks.values())
    assert checks["encoding_fp32"]["measured"] == 0.0 and checks["encoding_bf16"]["measured"] > 0  # the dry run's "device" is the CPU: bf16 did run
    ddp = report["ddp"]
    assert ddp["backend"] == "gloo" and ddp["world"] == 2 and ddp["same_steps"] and ddp["steps"] == 3
    assert report["tagger"]["speed"]["sentences"] == 64


@pytest.mark.parametrize(
    "name, peak",
    [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12), ("NVIDIA H200", 989e12),
     ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA L4", 121e12), ("NVIDIA L40S", 362e12), ("NVIDIA A10", 125e12), ("NVIDIA A10G", None),
     ("Tesla T4", None)],
)  # fmt: skip
def test_the_peak_is_looked_up_by_the_gpu_name(gpu_check, name, peak):
    found, source = gpu_check.peak_of(name)
    assert found == peak
    assert ("--peak-flops" in source) == (peak is None)


def test_the_last_line_reports_a_failed_check_an_error_and_a_skipped_ddp(gpu_check):
    checks = {name: {"ok": True} for name in gpu_check.TOL}
    data = {"errors": {}, "pretrain": {"mfu": 0.41234}, "ddp": {"ok": True}, "tagger": {"checks": checks, "speed": {"sentences_per_s": 1234.56}}}
    assert gpu_check.last_line(data) == ("pretrain_mfu=0.412 ddp_ok=true tag_sentences_per_s=1234.6 cuda_cpu_parity=true", True)
    checks["encoding_bf16"] = {"ok": False}
    assert gpu_check.last_line(data)[0].endswith("cuda_cpu_parity=false") and not gpu_check.last_line(data)[1]
    del checks["encoding_bf16"]  # a check that did not run is not a pass
    assert gpu_check.last_line(data)[0].endswith("cuda_cpu_parity=false")
    data = {"errors": {"ddp": "Traceback ..."}, "pretrain": {"mfu": None}}
    assert gpu_check.last_line(data) == ("pretrain_mfu=n/a ddp_ok=error tag_sentences_per_s=n/a cuda_cpu_parity=false", False)
    data = {"errors": {}, "ddp": {"skipped": True, "reason": "1 GPU visible"}, "tagger": {"checks": {n: {"ok": True} for n in gpu_check.TOL}}}
    assert gpu_check.last_line(data) == ("pretrain_mfu=n/a ddp_ok=skipped tag_sentences_per_s=n/a cuda_cpu_parity=true", True)


def test_it_writes_annotated_parquet_as_the_dataset_stage_does_and_imports_no_polars(gpu_check):
    """GPU images lack polars: the script keeps its own copy of the schema, equal to the dataset stage's."""
    from nuner_core.dataset.build import ANNOTATED_SCHEMA

    assert gpu_check.ANNOTATED_SCHEMA == ANNOTATED_SCHEMA
    done = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['x']; sys.path.insert(0, 'benchmarks'); import gpu_check; "
                           "import nuner_core.tagging.tagger, nuner_core.evaluation.features, nuner_core.evaluation.encoders; "
                           "import nuner_core.token_classifier.train, nuner_core.pretraining.worker; "
                           "print(sorted(m for m in ('polars', 'prefect') if m in sys.modules))"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr[-2000:]


def test_a_part_that_would_start_after_the_budget_is_skipped_and_said(gpu_check, tmp_path):
    report = gpu_check.Report(tmp_path / "r.json", {"mode": "test"}, budget_s=0.0)
    assert report.part("tagger", lambda: pytest.fail("ran over the budget")) is None
    assert report.data["over_budget"] == ["tagger"] and report.data["tagger"]["skipped"]
    assert json.loads((tmp_path / "r.json").read_text())["over_budget"] == ["tagger"]
    assert gpu_check.last_line(report.data) == ("pretrain_mfu=n/a ddp_ok=not_run tag_sentences_per_s=n/a cuda_cpu_parity=skipped", False)
    report = gpu_check.Report(tmp_path / "r.json", {"mode": "test"}, budget_s=60.0)
    assert report.part("encoding", lambda: 1 / 0) is None and "ZeroDivisionError" in report.data["errors"]["encoding"]
    assert gpu_check.last_line(report.data)[0].endswith("cuda_cpu_parity=error")
