"""The exported directory: transformers.pipeline gives the same entities as predict; ONNX parity; predict on files."""

from __future__ import annotations

import io
import json

import pytest
from finetune_helpers import toy_records, write_jsonl

from nuner_core.finetuning.config import FilesData, FinetuneConfig
from nuner_core.finetuning.data import load_data
from nuner_core.finetuning.export import SETTINGS_FILE, export_onnx, model_card, save_model_dir
from nuner_core.finetuning.predict import Tagger, decode_entities, predict_files
from nuner_core.text.words import SEGMENTATION
from nuner_core.token_classifier.model import encode_windows
from nuner_core.token_classifier.train import RunSpec, load_selected, train_run
from nuner_core.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A tiny model trained to tag the toy data, exported like the stage does."""
    root = tmp_path_factory.mktemp("trained")
    files = {split: write_jsonl(root / f"{split}.jsonl", toy_records(n, seed)) for split, n, seed in (("train", 60, 0), ("dev", 12, 1))}
    cfg = FinetuneConfig(data=FilesData(train=str(files["train"]), dev=str(files["dev"])), epochs=12, batch_size=6, lr=3e-3, head_lr=1e-2,
                         max_length=48, stride=8, num_threads=1, patience=None)  # fmt: skip
    data = load_data(cfg.data, "snap")
    spec = RunSpec("nuner", tiny_model_dir, seed=0)
    summary = train_run(cfg.training(), spec, data, root / "work")
    model = load_selected(spec, data.labels, root / "work", summary, cfg.training())
    tokenizer = load_tokenizer(tiny_model_dir, pre_split_words=True)
    settings = {"segmentation": SEGMENTATION, "max_length": 48, "stride": 8, "labels": data.labels}
    card = model_card(title="toy", encoder=tiny_model_dir, labels=data.labels, data=data.sources, training={}, scores={})
    out = save_model_dir(model, tokenizer, root / "model", settings, card)
    return {"dir": out, "model": model, "tokenizer": tokenizer, "data": data, "summary": summary}


TEXTS = [
    "Alice flew to Paris on Monday.",
    "On Friday Mary Smith visited New York with Bob.",
    "It rained in Los Angeles all day.",
    "The weather was fine.",
    "Peter Jones and Anna met in Berlin.",
]


def test_transformers_pipeline_gives_the_same_entities_as_predict(trained):
    from transformers import pipeline

    assert trained["summary"]["dev_f1"] > 0.9  # the model has learned the toy data: the comparison is not of empty lists
    hf = pipeline("token-classification", model=str(trained["dir"]), aggregation_strategy="simple", device="cpu")
    ours = Tagger(trained["dir"], device="cpu").tag(TEXTS)
    assert sum(len(e) for e in ours) >= 10
    for text, mine in zip(TEXTS, ours):
        theirs = hf(text)
        assert [(e["start"], e["end"], e["entity_group"]) for e in theirs] == [(e["start"], e["end"], e["label"]) for e in mine], text
        assert [float(e["score"]) for e in theirs] == pytest.approx([e["score"] for e in mine], abs=1e-4)
        assert all(text[e["start"] : e["end"]] == e["text"] for e in mine)
    assert ("Mary Smith", "person") in {(e["text"], e["label"]) for e in ours[1]}
    # "first" reads first sub-tokens, as the model was trained: the same entities on words of several sub-tokens too
    # (transformers' words are whitespace-separated: these texts have no punctuation attached to a word)
    spaced = ["Hyderabadi Alice flew to Paris on Monday", "On Friday Mary Smith visited Tokenization with Bob"]
    first = pipeline("token-classification", model=str(trained["dir"]), aggregation_strategy="first", device="cpu")
    for text, mine in zip(spaced, Tagger(trained["dir"], device="cpu").tag(spaced)):
        assert [(e["start"], e["end"], e["entity_group"]) for e in first(text)] == [(e["start"], e["end"], e["label"]) for e in mine], text
        assert mine


def test_onnx_export_matches_pytorch_logits(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    tokenizer = trained["tokenizer"]
    sentences = [s.tokens for s in trained["data"].dev] + [("a", "long", "sentence") * 30]  # one spread over windows
    windows = encode_windows(tokenizer, sentences, max_length=48, stride=8)
    report = export_onnx(trained["model"], tmp_path, windows, tokenizer.pad_token_id, tolerance=1e-4)
    assert (tmp_path / "model.onnx").stat().st_size > 10_000
    assert report["windows_checked"] == len(windows) > len(sentences)
    assert 0 <= report["max_abs_logit_diff"] < 1e-4


def test_predict_files_long_texts_in_windows(trained, tmp_path):
    long_text = " ".join(TEXTS * 12)  # ~400 words: many windows of 48 sub-tokens
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": "long", "text": long_text}, {"text": TEXTS[0]}])
    plain = tmp_path / "plain.txt"
    plain.write_text(TEXTS[1] + "\n\n" + TEXTS[2] + "\n")
    out = io.StringIO()
    counts = predict_files(trained["dir"], [docs, plain], out, device="cpu")
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["id"] for r in rows] == ["long", 2, 1, 3]  # as `nuner tag` names them: the id, else the line number
    assert counts["documents"] == 4 and counts["blank_lines"] == 1 and counts["entities"] == sum(len(r["entities"]) for r in rows)
    assert predict_files(trained["dir"], [docs], tmp_path / "out" / "tagged.jsonl", device="cpu")["documents"] == 2
    assert [json.loads(line)["id"] for line in (tmp_path / "out" / "tagged.jsonl").read_text().splitlines()] == ["long", 2]
    single = {(e["text"], e["label"]) for text_entities in Tagger(trained["dir"], device="cpu").tag(TEXTS) for e in text_entities}
    found = {(e["text"], e["label"]) for e in rows[0]["entities"]}
    assert found == single  # every part of the long text was read, with enough context to tag it the same
    assert all(long_text[e["start"] : e["end"]] == e["text"] for e in rows[0]["entities"])
    assert len(rows[0]["entities"]) == 12 * sum(len(e) for e in Tagger(trained["dir"], device="cpu").tag(TEXTS))
    assert json.loads((trained["dir"] / SETTINGS_FILE).read_text())["max_length"] == 48


@pytest.mark.parametrize(
    "tags, expected",
    [
        ("B-a I-a O", [(0, 2, "a")]),
        ("I-a I-a B-a", [(0, 2, "a"), (2, 3, "a")]),  # I-X opens an entity after O (transformers' simple grouping)
        ("B-a I-b I-b", [(0, 1, "a"), (1, 3, "b")]),
        ("O O O", []),
    ],
)
def test_decode_entities(tags, expected):
    text = "x y z"
    words = [(0, 1), (2, 3), (4, 5)]
    got = decode_entities(text, words, tags.split(), [0.5, 1.0, 0.9])
    assert [(words[next(i for i, w in enumerate(words) if w[0] == e["start"])][0], e["end"], e["label"]) for e in got] == [
        (words[a][0], words[b - 1][1], t) for a, b, t in expected
    ]


def test_predict_reports_a_bad_input_line(trained, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"nope": 1}\n')
    with pytest.raises(Exception, match=r"bad\.jsonl:2"):
        predict_files(trained["dir"], [bad], tmp_path / "out.jsonl", device="cpu")
    assert not (tmp_path / "out.jsonl").exists() and not list(tmp_path.glob(".*partial"))


def test_predict_skip_bad_counts_a_bad_line_and_tags_the_others(trained, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "Alice flew to Paris."}\n{"text": "a \\ud800 b"}\n{"text": "Bob stayed."}\n')
    counts = predict_files(trained["dir"], [docs], tmp_path / "out.jsonl", device="cpu", skip_bad=True)
    assert counts["documents"] == 2 and counts["bad_lines"] == 1
    assert [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [1, 3]


def test_nuner_predict_command_line(trained, tmp_path):
    """`nuner predict --model DIR FILE` writes the same JSON lines as predict_files; bad input is one line, exit 2."""
    import subprocess
    import sys

    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(TEXTS) + "\n")
    run = subprocess.run([sys.executable, "-m", "flows.cli", "predict", "--model", str(trained["dir"]), "--device", "cpu", str(docs)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    expected = io.StringIO()
    predict_files(trained["dir"], [docs], expected, device="cpu")
    assert run.stdout == expected.getvalue() and len(run.stdout.splitlines()) == len(TEXTS)
    bad = subprocess.run([sys.executable, "-m", "flows.cli", "predict", "--model", str(tmp_path), str(docs)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not a model directory" in bad.stderr and "Traceback" not in bad.stderr
