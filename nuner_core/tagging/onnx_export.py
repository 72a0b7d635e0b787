"""Writing a zero-shot model's encoders as ONNX (``nuner export-model --onnx [--int8]``); the files ``onnx_backend`` reads.

Each encoder is traced (the TorchScript exporter, opset 17, as ``finetuning.export``) behind a
wrapper returning ``last_hidden_state`` only, with dynamic batch and sequence axes; eager
attention, whose graph has no SDPA-specific ops. ``int8``: onnxruntime's dynamic quantisation of
the text encoder (int8 weights, activations quantised on the fly), where tagging spends its time.

The int8 choices, measured on the demo's trained MiniLM-L6 (zero-shot entity micro-F1 on the four
shared benchmarks, and benchmarks/onnx_bench.py): QInt8 weights (QUInt8 runs 2x slower: no
u8 x u8 fast path), one scale per output channel (per-tensor scales lost 0.65 F1 on average and
1.9 on mit_movie; per channel 0.13, at the same speed), the graph as traced: onnxruntime's own
session-time fusions already merge layer norm and GELU, and the transformers optimizer's fused
attention (QAttention) was 1.5x slower on one thread; quant_pre_process changed nothing here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from nuner_core.devices import pad_id
from nuner_core.dual_encoder.model import load_encoder
from nuner_core.stage_api import StageError
from nuner_core.tagging.onnx_backend import ONNX_FILES, ONNX_SETTINGS, OUTPUT, SCORER
from nuner_core.tagging.settings import ENCODERS
from nuner_core.tokenizer import load_tokenizer

ONNX_OPSET = 17


class _Hidden(torch.nn.Module):
    """``(input_ids, attention_mask) -> last_hidden_state``: the graph ONNX gets (no dict output)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        return hidden


def export_encoder(encoder_dir: Path, out: Path) -> None:
    """``encoder_dir`` (a save_pretrained encoder with its tokenizer) as one ONNX file at ``out``."""
    model = _Hidden(load_encoder(str(encoder_dir), attn_implementation="eager").cpu()).eval()  # eval: no dropout in the graph
    tokenizer = load_tokenizer(str(encoder_dir))
    rows = tokenizer(["a short one", "a somewhat longer example sentence"])["input_ids"]
    width = max(len(r) for r in rows) + 1  # one padded column at least: the traced mask path is the general one
    ids = torch.full((len(rows), width), pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)], mask[b, : len(r)] = torch.tensor(r), 1
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow and the legacy exporter's deprecation
        torch.onnx.export(
            model, (ids, mask), str(out), input_names=["input_ids", "attention_mask"], output_names=[OUTPUT],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, OUTPUT: axes}, opset_version=ONNX_OPSET,
            dynamo=False,  # the TorchScript exporter: needs onnx only (the dynamo one also needs onnxscript)
        )  # fmt: skip


def write_scorer(out: Path) -> None:
    """The (words (M, D), labels (C, D)) -> logits (M, C) product as a graph of its own (no weights).

    The tagger runs it on onnxruntime rather than numpy: numpy's OpenBLAS wakes its own pool of
    threads for this product and leaves them spinning, which took a core from the encoder and cost
    the int8 backend 40% of its speed on 1 thread (benchmarks/onnx_bench.py, OPENBLAS_NUM_THREADS=1
    against unset).
    """
    import onnx
    from onnx import TensorProto, helper

    words = helper.make_tensor_value_info("words", TensorProto.FLOAT, ["words", "dim"])
    labels = helper.make_tensor_value_info("labels", TensorProto.FLOAT, ["labels", "dim"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["words", "labels"])
    graph = helper.make_graph([helper.make_node("Gemm", ["words", "labels"], ["logits"], transB=1)], "scorer", [words, labels], [logits])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)]), str(out))


def write_onnx(model_dir: Path, int8: bool) -> list[str]:
    """Both encoders of ``model_dir`` as ONNX (and the int8 text encoder), listed in ``onnx.json``; the file names."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise StageError("export-model --onnx needs onnx and onnxruntime: pip install 'nuner-pipeline[onnx]'") from None
    files = ONNX_FILES["onnx"]
    for name in ENCODERS:
        export_encoder(model_dir / name, model_dir / files[name])
    write_scorer(model_dir / SCORER)
    backends = {"onnx": files}
    if int8:
        int8_files = ONNX_FILES["onnx-int8"]
        quantize_dynamic(model_dir / files["text_encoder"], model_dir / int8_files["text_encoder"], weight_type=QuantType.QInt8, per_channel=True)
        backends["onnx-int8"] = int8_files
    (model_dir / ONNX_SETTINGS).write_text(json.dumps({"opset": ONNX_OPSET, "backends": backends, "scorer": SCORER}, indent=2) + "\n", encoding="utf-8")
    return sorted({ONNX_SETTINGS, SCORER, *(f for b in backends.values() for f in b.values())})
