"""The evaluation's zero_shot protocol per backend (evaluate.zero_shot.backends) and decoding: one export, rows side by side."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from nuner_core.evaluation.config import EvaluateConfig  # noqa: E402
from nuner_core.evaluation.harness import score_zero_shot  # noqa: E402
from nuner_core.evaluation.report import protocol_section  # noqa: E402
from nuner_core.evaluation.results import results_frame  # noqa: E402
from nuner_core.iob2.conll import Sentence  # noqa: E402
from nuner_core.stage_api import LogProgress  # noqa: E402

SENTENCES = [
    Sentence(("alice", "ate", "pizza", "in", "new", "york"), ("O", "O", "B-Food", "O", "B-City", "I-City")),
    Sentence(("bread", "from", "paris", "and", "london"), ("B-Food", "O", "B-City", "O", "B-City")),
]
BENCHES = [SimpleNamespace(name=name, types=["City", "Food"], test=SimpleNamespace(sentences=SENTENCES)) for name in ("one", "two")]


def _score(models, cache, **zero_shot):
    config = EvaluateConfig(zero_shot=zero_shot)
    return score_zero_shot(config, models, BENCHES, "cpu", LogProgress("test"), cache)


def test_each_backend_is_scored_beside_torch_from_one_export_outside_the_model(planted_dir, tmp_path, monkeypatch):
    import nuner_core.tagging as tagging

    exports = []
    real = tagging.export_model
    monkeypatch.setattr(tagging, "export_model", lambda *a, **k: exports.append(a) or real(*a, **k))
    before = sorted(p.name for p in planted_dir.iterdir())
    torch_only = _score({"planted": planted_dir}, tmp_path / "cache")
    scores = _score({"planted": planted_dir}, tmp_path / "cache", backends=["torch", "onnx", "onnx-int8"])
    assert len(exports) == 1 and exports[0][1].is_relative_to(tmp_path / "cache")  # one export, in the cache, for both benchmarks
    _score({"planted": planted_dir}, tmp_path / "cache", backends=["onnx"])
    assert len(exports) == 1  # reused by a later run
    assert sorted(p.name for p in planted_dir.iterdir()) == before  # nothing written into the model directory

    names = ["planted", "planted (onnx)", "planted (onnx-int8)"]
    assert list(dict.fromkeys(r["encoder"] for r in scores.rows)) == names
    assert [r for r in scores.rows if r["encoder"] == "planted"] == [
        {**r, "fit_s": pytest.approx(r["fit_s"], abs=60)} for r in torch_only.rows]  # the torch rows as without backends
    value = {(r["encoder"], r["dataset"], r["metric"]): r["value"] for r in scores.rows}
    for metric in ("token_macro_f1", "entity_micro_f1"):
        assert value[("planted (onnx)", "one", metric)] == value[("planted", "one", metric)]  # fp32: the same entities
    assert {t["model"] for t in scores.thresholds} == set(names)

    table = "\n".join(protocol_section(results_frame(scores.rows), "zero_shot_entity", "base", ["one", "two"]))
    for name in names:
        assert f"| one | {name} | " in table and f"| **average** | {name} | " in table


def test_the_decoding_reaches_the_protocol(planted_dir, tmp_path, monkeypatch):
    from nuner_core.evaluation import zero_shot

    seen = []
    real = zero_shot.evaluate_zero_shot
    monkeypatch.setattr(zero_shot, "evaluate_zero_shot", lambda *a, **k: seen.append(k["decoding"]) or real(*a, **k))
    _score({"planted": planted_dir}, tmp_path, decoding="spans")
    _score({"planted": planted_dir}, tmp_path)
    assert seen == ["spans", "spans", EvaluateConfig().zero_shot.decoding, EvaluateConfig().zero_shot.decoding]


def test_backends_are_checked():
    with pytest.raises(ValueError, match="twice"):
        EvaluateConfig(zero_shot={"backends": ["onnx", "onnx"]})
    with pytest.raises(ValueError):
        EvaluateConfig(zero_shot={"backends": ["tensorflow"]})
    with pytest.raises(ValueError):
        EvaluateConfig(zero_shot={"backends": []})
