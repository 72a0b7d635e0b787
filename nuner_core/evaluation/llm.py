"""Protocol "llm" (paper section 6): an LLM tags each test sentence with a support set as worked examples.

The competitor the paper sets NuNER against: no training at all, the k examples are shown
in the prompt. It runs on the same benchmarks, the same support sets (``sampling.py``) and
the same test sentences as the encoders, and is scored with the same functions
(``metrics.py``): token macro-F1 (protocol ``llm``, beside the frozen probe) and strict
IOB2 entity micro-F1 (protocol ``llm_entity``, beside fine-tuning).

The prompt is ``llm_prompt.py``'s, the answers are read by ``llm_parse.py``; the prompts go
through annotation's request path (``annotation/batches.py``: response cache, leases, the
client, the budget).

A test sentence without an answer (the budget stopped the run, the request failed after
its retries, offline without a cached answer) is not scored: the rows' ``test_sentences``
is the number scored, the summary says "N of M", and the artifact is marked incomplete so
that the next run of the stage asks for exactly the missing ones (the rest come from the
response cache).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nuner_core.annotation.batches import Clock, Outcome, complete_batches
from nuner_core.annotation.config import ModelPrice
from nuner_core.evaluation.benchmarks import Benchmark
from nuner_core.evaluation.config import EvaluateConfig, LLMSpec
from nuner_core.evaluation.frozen import word_labels
from nuner_core.evaluation.llm_parse import ParseStats, parse_answer
from nuner_core.evaluation.llm_prompt import INPUT, PROMPT_VERSION, example_messages, sentence_text
from nuner_core.evaluation.sampling import SupportSet
from nuner_core.evaluation.timing import TimingStore
from nuner_core.hashing import short_hash
from nuner_core.iob2.conll import Sentence, mentions
from nuner_core.iob2.metrics import entity_micro_f1, token_macro_f1
from nuner_core.stage_api import Progress

log = logging.getLogger(__name__)

def answers_schema() -> dict[str, Any]:
    """``llm_answers.parquet``: one row per LLM, data set, cell and test sentence, with its parse counts."""
    import polars as pl

    return {"llm": pl.String, "dataset": pl.String, "k": pl.Int64, "seed": pl.Int64, "test_index": pl.Int64,
            "text": pl.String, "answer": pl.String, "from_cache": pl.Boolean, "error": pl.String,
            "predicted": pl.List(pl.String), **{name: pl.Int64 for name in ParseStats().as_dict()}}


@dataclass
class LLMScores:
    rows: list[dict[str, Any]] = field(default_factory=list)  # protocols llm (token) and llm_entity, one per cell each
    answers: list[dict[str, Any]] = field(default_factory=list)  # one per LLM, data set, cell, test sentence
    cells: list[dict[str, Any]] = field(default_factory=list)  # accounting per LLM, data set, cell
    llms: list[dict[str, Any]] = field(default_factory=list)  # accounting per LLM (requests, cost, stop reason)
    scored_indices: dict[tuple[str, str, int, int], list[int]] = field(default_factory=dict)  # (llm, data set, k, seed) -> test indices scored
    seconds: float = 0.0

    @property
    def incomplete(self) -> list[dict[str, Any]]:
        """Cells with test sentences left unscored (budget, failures, offline misses)."""
        return [c for c in self.cells if c["scored"] < c["test_sentences"]]


def llm_identity(spec: LLMSpec) -> str:
    """What the LLM's answers depend on: model, sampling and the prompt's version (not the endpoint)."""
    payload = [spec.model, spec.sampling(), PROMPT_VERSION]
    return "llm-" + short_hash(json.dumps(payload, sort_keys=True))


def llm_test_indices(bench: Benchmark, config: EvaluateConfig) -> list[int]:
    """Indices of the test sentences the LLMs tag: all, or a seeded subsample (``llm.max_test_sentences``)."""
    n = len(bench.test.sentences)
    cap = config.llm.max_test_sentences
    if cap is None or cap >= n:
        return list(range(n))
    return sorted(int(i) for i in np.random.default_rng([config.test_seed, 15]).choice(n, size=cap, replace=False))


def score_llms(
    config: EvaluateConfig,
    benches: Sequence[Benchmark],
    supports: dict[str, dict[tuple[int, int], SupportSet]],
    grid: Sequence[tuple[int, int]],
    llm_cache: Path,
    timings: TimingStore,
    progress: Progress,
    environ: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> LLMScores:
    """Every configured LLM on every selected benchmark and cell of ``grid``; see the module docstring."""
    out = LLMScores()
    started = time.perf_counter()
    selected = [b for b in benches if config.llm.benchmarks is None or b.name in config.llm.benchmarks]
    for spec in config.llms:
        cells: list[tuple[Benchmark, tuple[int, int], list[int], int]] = []  # data set, cell, test indices, shared prompt chars
        batches: list[list[list[dict[str, str]]]] = []
        for bench in selected:
            subset = llm_test_indices(bench, config)
            for grid_cell in grid:
                examples = [bench.pool.sentences[i] for i in supports[bench.name][grid_cell].indices]
                shared = example_messages(bench.types, examples)  # one list per cell, shared by its prompts
                batches.append([shared + [{"role": "user", "content": INPUT + sentence_text(bench.test.sentences[i])}]
                                for i in subset])
                cells.append((bench, grid_cell, subset, sum(len(m["content"]) for m in shared)))
        cache_dir = Path(spec.cache_dir) if spec.cache_dir else llm_cache
        result = complete_batches(spec, batches, cache_dir, field=f"evaluate.llms[{spec.name}]", progress=progress,
                                  environ=environ, clock=clock)
        price = spec.price()
        identity = llm_identity(spec)
        totals = ParseStats()
        for (bench, (k, seed), subset, chars), outcomes, seconds, asked in zip(cells, result.outcomes, result.batch_s,
                                                                               result.requested):
            cell = _score_cell(spec, identity, bench, supports[bench.name][(k, seed)], subset, outcomes, price, chars, out)
            totals.add(cell.pop("_parse"))
            timing_key = f"{identity}|{bench.test.fingerprint}|{k}|{seed}|{len(subset)}"
            if asked:
                timings.record(timing_key, asked, seconds, {"llm": spec.name, "model": spec.model, "dataset": bench.name,
                                                             "max_in_flight": spec.max_in_flight})
            measured = timings.rate(timing_key)
            cell.update(requested=asked, seconds=round(seconds, 3),
                        s_per_1k=None if measured is None else round(1000 * measured.seconds / measured.sentences, 3),
                        time_measured="this run" if asked else ("an earlier run" if measured else None))
            out.cells.append(cell)
        stats = result.stats
        out.llms.append({
            "name": spec.name, "model": spec.model, "endpoint": spec.base_url or "https://api.openai.com/v1",
            "identity": identity, "prompt_version": PROMPT_VERSION, "stopped": result.stopped, "joined_run": result.joined,
            "wall_s": round(result.wall_s, 3), "rate_limit_wait_s": round(result.limiter_wait_s, 3),
            "price": price.model_dump() if price else None, "run": stats.as_dict(), "parse": totals.as_dict(),
        })
        if result.stopped:
            log.warning("evaluate.llms[%s]: stopped by the budget (%s); the sentences answered so far are scored, the "
                        "rest are not. %s.", spec.name, result.stopped, result.budget_note)
    out.seconds = time.perf_counter() - started
    return out


def _score_cell(spec: LLMSpec, identity: str, bench: Benchmark, support: SupportSet, subset: list[int],
                outcomes: Sequence[Outcome], price: ModelPrice | None, shared_chars: int, out: LLMScores) -> dict[str, Any]:
    """Parse and score one cell's answers; append its result rows and answer rows; return its accounting."""
    parse = ParseStats()
    gold: list[Sentence] = []
    pred: list[Sentence] = []
    scored: list[int] = []
    missing: Counter[str] = Counter()
    cost = 0.0
    prompt_tokens = completion_tokens = from_cache = 0
    for index, outcome in zip(subset, outcomes):
        sentence = bench.test.sentences[index]
        row: dict[str, Any] = {"llm": spec.name, "dataset": bench.name, "k": support.k, "seed": support.seed, "test_index": index,
               "text": sentence_text(sentence), "answer": outcome.content, "from_cache": outcome.from_cache,
               "error": outcome.error, "predicted": None, **{n: 0 for n in ParseStats().as_dict()}}
        if outcome.content is None:
            missing[outcome.reason or "failed"] += 1
            out.answers.append(row)
            continue
        tags, stats = parse_answer(outcome.content, sentence.tokens, bench.types, outcome.finish_reason)
        parse.add(stats)
        row.update(stats.as_dict(), predicted=list(tags))
        out.answers.append(row)
        gold.append(sentence)
        pred.append(Sentence(sentence.tokens, tags))
        scored.append(index)
        from_cache += outcome.from_cache
        p, c = _tokens(outcome, spec, shared_chars + len(INPUT) + len(row["text"]))
        prompt_tokens += p
        completion_tokens += c
        cost += price.cost(p, c) if price else 0.0
    out.scored_indices[(spec.name, bench.name, support.k, support.seed)] = scored
    if scored:
        entity, entity_types = entity_micro_f1([s.tags for s in gold], [s.tags for s in pred])
        token, token_types = token_macro_f1(word_labels(gold, bench.types), word_labels(pred, bench.types), bench.types)
        for protocol, metric, value, per_type in (("llm", "token_macro_f1", token, token_types),
                                                  ("llm_entity", "entity_micro_f1", entity, entity_types)):
            out.rows.append({
                "encoder": spec.name, "encoder_ref": f"{spec.model} at {spec.base_url or 'https://api.openai.com/v1'}",
                "encoder_id": identity, "is_base": False, "dataset": bench.name, "protocol": protocol, "k": support.k,
                "seed": support.seed, "metric": metric, "value": value, "per_type": [asdict(s) for s in per_type],
                "support_sentences": len(support.indices),
                "support_mentions": sum(len(mentions(bench.pool.sentences[i].tags)) for i in support.indices),
                "shortfall": [{"type": t, "found": n} for t, n in support.shortfall.items()],
                "test_sentences": len(scored), "fit_s": 0.0,
            })
    n = len(scored)
    return {
        "llm": spec.name, "dataset": bench.name, "k": support.k, "seed": support.seed, "test_sentences": len(subset),
        "test_total": len(bench.test.sentences), "scored": n, "not_scored": dict(sorted(missing.items())),
        "from_cache": from_cache, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "cost_usd": cost if price else None,
        "usd_per_1k": 1000 * cost / n if price and n else None,
        "tokens_per_sentence": round((prompt_tokens + completion_tokens) / n, 1) if n else None,
        "parse": parse.as_dict(), "_parse": parse,
    }


def _tokens(outcome: Outcome, spec: LLMSpec, prompt_chars: int) -> tuple[int, int]:
    """The answer's tokens as reported when it was made; estimated from characters when the endpoint gave none."""
    if outcome.prompt_tokens is not None and outcome.completion_tokens is not None:
        return outcome.prompt_tokens, outcome.completion_tokens
    return (max(1, round(prompt_chars / spec.chars_per_token)),
            max(0, round(len(outcome.content or "") / spec.chars_per_token)))
