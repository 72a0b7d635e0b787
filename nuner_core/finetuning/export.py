"""The product: a ``transformers`` model directory, its model card, and an optional ONNX export checked for parity.

``model/`` holds ``config.json`` (IOB2 ``id2label``/``label2id``), the weights, the tokenizer,
``README.md`` (the model card) and ``nuner_finetune.json`` (how words and windows were made, so
``nuner predict`` tags raw text the way the model was trained). ``AutoModelForTokenClassification``
loads it and ``pipeline("token-classification", aggregation_strategy="simple")`` runs it as is.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from nuner_core.stage_api import StageError
from nuner_core.token_classifier.model import Window, collate

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SETTINGS_FILE = "nuner_finetune.json"
ONNX_FILE = "model.onnx"
ONNX_OPSET = 17


def save_model_dir(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path, settings: dict[str, Any], card: str) -> Path:
    from nuner_core.token_classifier.model import quiet_transformers

    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
    (out / "README.md").write_text(card)
    return out


class _Logits(torch.nn.Module):
    """``(input_ids, attention_mask) -> logits``: the graph ONNX gets (no loss, no dict output)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, T, L)
        return logits


def export_onnx(model: torch.nn.Module, out_dir: Path, windows: Sequence[Window], pad_id: int, tolerance: float, batch_size: int = 16) -> dict[str, Any]:
    """Write ``out_dir/model.onnx`` and check it against PyTorch on ``windows`` (real sentences).

    The parity figure is the largest absolute logit difference over every non-padding
    position; above ``tolerance`` the export is refused (StageError).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise StageError("finetune.export_onnx needs onnx and onnxruntime: pip install onnx onnxruntime") from None
    if not windows:
        raise StageError("finetune.export_onnx: no sentence to check the export on (no test, dev or train data)")
    model = model.cpu().eval()
    wrapper = _Logits(model).eval()
    # Trace on a batch with padding (one extra padded column), so the attention-mask path is the general one.
    example = collate(list(windows[:2]), pad_id)
    example = {
        "input_ids": torch.nn.functional.pad(example["input_ids"], (0, 1), value=pad_id),
        "attention_mask": torch.nn.functional.pad(example["attention_mask"], (0, 1), value=0),
    }
    path = out_dir / ONNX_FILE
    axes = {"batch": 0, "sequence": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow and the legacy exporter's deprecation
        torch.onnx.export(
            wrapper,
            (example["input_ids"], example["attention_mask"]),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={name: {v: k for k, v in axes.items()} for name in ("input_ids", "attention_mask", "logits")},
            opset_version=ONNX_OPSET,
            dynamo=False,  # the TorchScript exporter: needs onnx only (the dynamo one also needs onnxscript)
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            batch = collate(windows[start : start + batch_size], pad_id)
            expected = wrapper(batch["input_ids"], batch["attention_mask"]).numpy()  # (B, T, L)
            got = session.run(["logits"], {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()})[0]
            real = batch["attention_mask"].numpy().astype(bool)
            worst = max(worst, float(np.abs(got - expected)[real].max()))
    report = {"file": ONNX_FILE, "opset": ONNX_OPSET, "windows_checked": len(windows), "max_abs_logit_diff": worst, "tolerance": tolerance}
    if not worst <= tolerance:
        path.unlink()
        raise StageError(f"ONNX export differs from PyTorch by {worst:.3g} (> tolerance {tolerance}) on {len(windows)} windows; not kept")
    return report


def model_card(
    *, title: str, encoder: str, labels: Sequence[str], data: dict[str, Any], training: dict[str, Any], scores: dict[str, Any],
) -> str:  # fmt: skip
    """A README.md with front matter for the hub, what the model is, how it scored, and how to use it."""
    types = sorted({label[2:] for label in labels if label != "O"})
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: token-classification",
        "tags: [token-classification, ner, nuner]",
        "---",
        "",
        f"# {title}",
        "",
        f"A named-entity tagger fine-tuned by the NuNER pipeline's `finetune` stage from `{encoder}`: the whole",
        "encoder plus a linear head over IOB2 labels, trained on the first sub-token of each word.",
        "",
        f"Entity types ({len(types)}): " + ", ".join(f"`{t}`" for t in types),
        "",
        "## Data",
        "",
        *[f"- {split}: {where}" for split, where in data.items()],
        "",
        "## Scores",
        "",
        *[f"- {line}" for line in scores.get("lines", [])],
        "",
        "Entity-level micro-F1: a predicted entity counts only if its words and type match a gold entity exactly",
        "(strict IOB2). Per type:",
        "",
    ]
    rows = scores.get("per_type", [])
    if rows:
        lines += ["| type | support | precision | recall | F1 |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['type']} | {r['support']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} |" for r in rows]
    lines += [
        "",
        "## Training",
        "",
        *[f"- {k}: {v}" for k, v in training.items()],
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        'tagger = pipeline("token-classification", model="path/to/this/model", aggregation_strategy="first")',
        'tagger("your text here")',
        "```",
        "",
        "`first` reads each word's first sub-token, where the model learned its labels; `simple` runs as well but reads",
        "every sub-token, so on words of several sub-tokens it can cut an entity inside a word. transformers' words are",
        "whitespace-separated; the NuNER pipeline's `nuner predict` also splits punctuation off (the words the model was",
        "trained on) and covers long texts in overlapping windows:",
        "",
        "```bash",
        "nuner predict --model path/to/this/model texts.jsonl > entities.jsonl",
        "```",
        "",
    ]
    return "\n".join(lines)
