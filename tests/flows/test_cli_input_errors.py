"""`nuner tag`, `nuner predict` and `nuner cache import` reject bad input in one line, exit code 2, before a model loads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CODE = ("import sys; from flows.cli import main; rc = main(sys.argv[1:]); "
        "print('torch loaded:', 'torch' in sys.modules); sys.exit(rc)")  # fmt: skip


def _nuner(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CODE, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _fake_zero_shot_model(root):
    """What `nuner tag` checks before loading: the layout and the settings (the weights are never read)."""
    for encoder in ("text_encoder", "concept_encoder"):
        (root / encoder).mkdir(parents=True)
        (root / encoder / "config.json").write_text("{}")
        (root / encoder / "tokenizer.json").write_text("{}")
    (root / "dual_encoder.json").write_text(json.dumps({"similarity": "cosine", "temperature": 5.0, "logit_bias": -2.0}))
    return root


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "docs.jsonl"
    good.write_text('{"text": "Alice in Paris"}\n')
    surrogate = tmp_path / "surrogate.jsonl"
    surrogate.write_text('{"text": "fine", "response": "x <> y"}\n{"text": "a \\ud800 b", "response": "x <> y"}\n')
    binary = tmp_path / "labels.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    model = _fake_zero_shot_model(tmp_path / "zs")
    finetuned = tmp_path / "ft"
    finetuned.mkdir()
    (finetuned / "config.json").write_text("{}")
    return {"good": good, "surrogate": surrogate, "binary": binary, "model": model, "finetuned": finetuned}


CASES = [
    ("tag-surrogate", ["tag", "--model", "{model}", "--labels", "city", "{surrogate}"], "surrogate.jsonl:2: "),
    ("tag-threshold-nan", ["tag", "--model", "{model}", "--labels", "city", "--threshold", "nan", "{good}"], "threshold"),
    ("tag-threshold-2", ["tag", "--model", "{model}", "--labels", "city", "--threshold", "2", "{good}"], "threshold"),
    ("tag-binary-labels", ["tag", "--model", "{model}", "--labels-file", "{binary}", "{good}"], "labels.bin:1: not UTF-8"),
    ("tag-zero-width-label", ["tag", "--model", "{model}", "--labels", "city, \u200b", "{good}"], "label 1"),
    ("predict-surrogate", ["predict", "--model", "{finetuned}", "{surrogate}"], "surrogate.jsonl:2: "),
    ("predict-batch-size-0", ["predict", "--model", "{finetuned}", "--batch-size", "0", "{good}"], "--batch-size"),
    ("import-binary", ["cache", "import", "{binary}"], "labels.bin:1: not UTF-8"),
    ("import-surrogate", ["cache", "import", "{surrogate}"], "surrogate.jsonl:2: "),
]


@pytest.mark.parametrize("case, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_tagging_and_import_input_is_one_line_exit_2_before_a_model_loads(case, args, message, files, tmp_path):
    out = _nuner(*[a.format(**files) if a.startswith("{") else a for a in args], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "torch loaded: False" in out.stdout
