"""The ONNX backends of the zero-shot tagger: export, parity with PyTorch, int8, no torch on the ONNX path, `nuner tag --backend`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from nuner_core.tagging import ModelDirectoryError, ZeroShotTagger, export_model  # noqa: E402
from nuner_core.tagging.onnx_backend import ONNX_SETTINGS, OnnxZeroShotTagger  # noqa: E402
from nuner_core.text.words import segment_words  # noqa: E402

TEXTS = [
    "Alice ate pizza in Paris.",
    "Bob flew to New York with Marie, then to Zurich and Berlin for bread and pasta.",
    "",
    " ".join(["London", "cafe", "tokyo", "was", "busy"] * 30),  # several windows of the 64-position encoders
]
LABELS = ["city", "food", "person", "x"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, planted_dir, random_dir):
    """The planted and the random model, each exported with --onnx --int8 (export once: tracing takes seconds)."""
    root = tmp_path_factory.mktemp("onnx")
    return {name: export_model(src, root / name, onnx=True, int8=True) for name, src in (("planted", planted_dir), ("random", random_dir))}


def test_export_writes_both_encoders_and_lists_them(exported):
    listed = json.loads((exported["planted"] / ONNX_SETTINGS).read_text())
    assert listed["opset"] == 17
    assert listed["backends"]["onnx"] == {"text_encoder": "text_encoder.onnx", "concept_encoder": "concept_encoder.onnx"}
    assert listed["backends"]["onnx-int8"]["concept_encoder"] == "concept_encoder.onnx"  # the concept encoder stays fp32
    assert listed["scorer"] == "scorer.onnx"
    for name in ("text_encoder.onnx", "concept_encoder.onnx", "text_encoder.int8.onnx", "scorer.onnx"):
        assert (exported["planted"] / name).is_file()
    # the int8 text encoder is the smaller file (weights stored as int8)
    assert (exported["planted"] / "text_encoder.int8.onnx").stat().st_size < (exported["planted"] / "text_encoder.onnx").stat().st_size


@pytest.mark.parametrize("model", ["planted", "random"])
def test_fp32_onnx_matches_pytorch(exported, model):
    torch_tagger = ZeroShotTagger.from_pretrained(exported[model], device="cpu")
    onnx_tagger = ZeroShotTagger.from_pretrained(exported[model], backend="onnx")
    assert isinstance(onnx_tagger, OnnxZeroShotTagger)
    spans = [segment_words(t) for t in TEXTS]
    expected = torch_tagger.score_spans(TEXTS, spans, LABELS)
    got = onnx_tagger.score_spans(TEXTS, spans, LABELS)
    assert [g.shape for g in got] == [e.shape for e in expected]
    assert max(float(np.abs(g - e).max(initial=0.0)) for g, e in zip(got, expected)) < 1e-4
    assert onnx_tagger.stats.windows == torch_tagger.stats.windows > len(TEXTS)  # the long text took several windows
    threshold = 0.5
    want, have = torch_tagger.predict(TEXTS, LABELS, threshold), onnx_tagger.predict(TEXTS, LABELS, threshold)
    assert [[(e.start, e.end, e.label) for e in doc] for doc in have] == [[(e.start, e.end, e.label) for e in doc] for doc in want]
    assert all(abs(a.score - b.score) < 1e-4 for x, y in zip(have, want) for a, b in zip(x, y))
    assert sum(map(len, want)) > 0
    if model == "planted":
        assert [(e.text, e.label) for e in have[0]] == [("Alice", "person"), ("pizza", "food"), ("Paris", "city")]



@pytest.mark.parametrize("decoding", ["words", "spans"])
def test_onnx_decodes_as_torch_with_thresholds_per_label_and_other_spellings(exported, decoding):
    """The same decoding path on both backends: per-label thresholds, spans decoding, and label normalisation."""
    torch_tagger = ZeroShotTagger.from_pretrained(exported["planted"], device="cpu")
    onnx_tagger = ZeroShotTagger.from_pretrained(exported["planted"], backend="onnx")
    labels = [label.upper() for label in LABELS]  # another spelling of the same labels
    thresholds = {LABELS[0]: 0.3}
    want = torch_tagger.predict(TEXTS, labels, 0.5, thresholds=thresholds, decoding=decoding)
    have = onnx_tagger.predict(TEXTS, labels, 0.5, thresholds=thresholds, decoding=decoding)
    assert [[(e.start, e.end, e.label) for e in doc] for doc in have] == [[(e.start, e.end, e.label) for e in doc] for doc in want]
    assert sum(map(len, want)) > 0 and {e.label for doc in want for e in doc} <= set(labels)

def test_the_scorer_graph_gives_numpys_probabilities_and_batches_are_small(exported):
    tagger = OnnxZeroShotTagger.from_pretrained(exported["random"], "onnx", threads=1)
    assert tagger.scorer is not None and tagger.batch_tokens == 512  # the default: one 64-token window fits many times
    spans = [segment_words(t) for t in TEXTS]
    on_graph = tagger.score_spans(TEXTS, spans, LABELS)
    tagger.scorer = None  # an export without scorer.onnx: the product in numpy
    in_numpy = tagger.score_spans(TEXTS, spans, LABELS)
    assert max(float(np.abs(a - b).max(initial=0.0)) for a, b in zip(on_graph, in_numpy)) < 1e-6
    assert sum(float(a.sum()) for a in on_graph) > 0


def test_int8_runs_and_stays_close(exported):
    fp32 = ZeroShotTagger.from_pretrained(exported["planted"], backend="onnx")
    int8 = ZeroShotTagger.from_pretrained(exported["planted"], backend="onnx-int8", threads=1)
    assert int8.backend == "onnx-int8" and int8.identity() != fp32.identity()
    words = [t.split() for t in TEXTS[:2]]
    a, b = fp32.predict_words(words, LABELS), int8.predict_words(words, LABELS)
    assert max(float(np.abs(x - y).max()) for x, y in zip(a, b)) < 0.1  # measured, not equal: weights are int8


def test_missing_export_and_bad_arguments_say_what_to_do(planted_dir, tmp_path):
    with pytest.raises(ModelDirectoryError, match="export-model SRC DEST --onnx"):
        ZeroShotTagger.from_pretrained(planted_dir, backend="onnx")
    only_fp32 = export_model(planted_dir, tmp_path / "fp32", onnx=True)
    with pytest.raises(ModelDirectoryError, match="--onnx --int8"):
        ZeroShotTagger.from_pretrained(only_fp32, backend="onnx-int8")
    with pytest.raises(ValueError, match="backend must be one of"):
        ZeroShotTagger.from_pretrained(planted_dir, backend="tensorrt")
    with pytest.raises(ValueError, match="onnx=True"):
        export_model(planted_dir, tmp_path / "x", int8=True)
    export_model(planted_dir, only_fp32, overwrite=True)  # an export with ONNX files is still an exported model


def test_the_onnx_tagger_runs_with_torch_unimportable(exported, planted):
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from nuner_core.tagging.onnx_backend import OnnxZeroShotTagger
        tagger = OnnxZeroShotTagger.from_pretrained({str(exported["planted"])!r}, "onnx")
        docs = tagger.predict({TEXTS[:2]!r}, {LABELS!r}, 0.5)
        assert sys.modules["torch"] is None and not any(m.startswith("torch.") for m in sys.modules)
        print(json.dumps([[e.as_dict() for e in doc] for doc in docs]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    want = [[e.as_dict() for e in doc] for doc in planted.predict(TEXTS[:2], LABELS, 0.5)]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert [[(e["start"], e["end"], e["label"]) for e in doc] for doc in got] == [[(e["start"], e["end"], e["label"]) for e in doc] for doc in want]


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_nuner_tag_backend_and_export_model_onnx_on_the_command_line(planted_dir, tmp_path, backend):
    model = tmp_path / "m"
    run = [sys.executable, "-m", "flows.cli"]
    out = subprocess.run([*run, "export-model", str(planted_dir), str(model), "--int8"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    docs = tmp_path / "docs.txt"
    docs.write_text("Alice ate pizza in Paris.\n")
    out = subprocess.run([*run, "tag", "--model", str(model), "--labels", "city, person, food", "--threshold", "0.5", "--backend", backend,
                          str(docs), "-o", str(tmp_path / "out.jsonl")], capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(e["text"], e["label"]) for e in rows[0]["entities"]] == [("Alice", "person"), ("pizza", "food"), ("Paris", "city")]
