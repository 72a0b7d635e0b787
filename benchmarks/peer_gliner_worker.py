"""The GLiNER half of ``peer_tag_bench.py``; runs in ``.venv-peer/`` (GLiNER needs an older transformers).

Only the standard library, torch and gliner are imported: this file never sees the project's
environment. Started by peer_tag_bench.py with a job file
``{"backbone": DIR, "texts": [...], "threads": 1, "batch_size": 8}``, it builds GLiNER from a
config whose backbone is that local directory (span head randomly initialised; HF_HUB_OFFLINE=1,
nothing downloads), prints ``{"ready": ...}`` and then answers one JSON line per request line
``{"labels": [...]}`` with ``{"seconds", "entities", "labels_scored", "words_kept"}``:

    labels_scored  the median (and min) over the texts of the labels whose <<ENT>> marker is
                   still in the encoder's input after truncation: GLiNER packs the labels in
                   front of the text and cuts what passes the tokenizer's 512 tokens
    words_kept     the share of the texts' words that survive the same truncation
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings


def build(backbone: str, threads: int):  # -> GLiNER
    import torch
    from gliner import GLiNER, GLiNERConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return GLiNER.from_config(GLiNERConfig(model_name=backbone), backbone_from_pretrained=True).eval()


def coverage(model, texts: list[str], labels: list[str]) -> dict:
    """How many labels and words GLiNER's encoder really sees (not timed)."""
    proc = model.data_processor
    ent_id = proc.transformer_tokenizer.convert_tokens_to_ids(model.config.ent_token)
    scored, kept, total = [], 0, 0
    for text in texts:
        words = [w for w, _, _ in proc.words_splitter(text)]
        tok = proc.tokenize_inputs([words], labels)
        scored.append(int((tok["input_ids"] == ent_id).sum()))
        kept += int(tok["words_mask"].max())
        total += len(words)
    return {"labels_scored": statistics.median(scored), "labels_scored_min": min(scored), "words_kept": kept / max(total, 1)}


def main() -> None:
    warnings.simplefilter("ignore")  # GLiNER warns per truncated sentence; coverage() counts them instead
    job = json.loads(open(sys.argv[1]).read())
    try:
        started = time.perf_counter()
        model = build(job["backbone"], job["threads"])
        import torch

        print(json.dumps({"ready": True, "load_s": time.perf_counter() - started, "gliner_class": type(model).__name__,
                          "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)  # fmt: skip
    except Exception as error:  # reported to the parent, which prints it and exits
        print(json.dumps({"ready": False, "error": f"{type(error).__name__}: {error}"}), flush=True)
        return
    texts = job["texts"]
    for line in sys.stdin:
        request = json.loads(line)
        labels = request["labels"]
        if request.get("coverage"):
            print(json.dumps(coverage(model, texts, labels)), flush=True)
            continue
        started = time.perf_counter()
        out = model.inference(texts, labels, threshold=0.5, batch_size=job["batch_size"])
        seconds = time.perf_counter() - started
        print(json.dumps({"seconds": seconds, "entities": sum(len(o) for o in out)}), flush=True)


if __name__ == "__main__":
    main()
