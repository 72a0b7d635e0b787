"""The paper's section 6 trade-off in one table: F1 beside cost and time per 1,000 test sentences.

For each data set and k an LLM was run on, one line per LLM and one per encoder:

- **F1** on the *same* test sentences and the *same* support sets: the LLM's scores as
  computed (``llm.py``), the encoders' frozen probe scored again on exactly the sentences
  the LLM answered (its word predictions are kept for those cells; identical to the frozen
  table when every sentence was answered), and the fine-tuned encoder's entity micro-F1
  where that protocol ran on the same cells (its whole test set: marked when the LLM
  answered fewer);
- **USD per 1,000 test sentences**: the LLM's, at the configured prices, from the tokens
  each answer took (answers from the cache included: what tagging costs, not what this run
  paid); the encoders run locally: no API cost;
- **seconds per 1,000 test sentences**, measured: the LLM's wall time per sentence asked
  (at its ``max_in_flight`` concurrency); the encoders' encoding time per sentence on the
  run's device plus the probe's fit-and-predict time per test sentence. A rerun served
  from caches measures nothing and reports what an earlier run measured (``timing.py``).
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

import numpy as np

from nuner_core.evaluation.benchmarks import Benchmark
from nuner_core.evaluation.frozen import word_labels
from nuner_core.evaluation.timing import TimingStore
from nuner_core.iob2.metrics import token_macro_f1


def encoder_speed(scores: Any, encoders: Sequence[tuple[Any, str]], benches: Sequence[Benchmark], device: str,
                  timings: TimingStore) -> dict[tuple[str, str], dict[str, Any]]:
    """(encoder, data set) -> seconds per 1,000 test sentences (encoding + probe), and where the figure comes from."""
    out = {}
    for ref, encoder_id in encoders:
        for bench in benches:
            stats = scores.encoding_by.get((ref.name, bench.name))
            probes = scores.probes_by.get((ref.name, bench.name))
            if stats is None or probes is None:
                continue
            key = f"encoder|{encoder_id}|{device}|{bench.pool.fingerprint}|{bench.test.fingerprint}"
            timings.record(key, stats.sentences, stats.seconds, {"encoder": ref.name, "dataset": bench.name, "device": device})
            measured = timings.rate(key)
            probe = 1000 * probes.fit_s / probes.fits / max(1, len(bench.test.sentences)) if probes.fits else 0.0
            out[(ref.name, bench.name)] = {
                "s_per_1k": None if measured is None else round(measured.per_1k + probe, 3),
                "encode_s_per_1k": None if measured is None else round(measured.per_1k, 3),
                "probe_s_per_1k": round(probe, 3),
                "measured": "this run" if stats.sentences else ("an earlier run" if measured else None),
                "device": device,
            }
    return out


def _mean_std(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    return 100 * statistics.mean(values), 100 * (statistics.stdev(values) if len(values) > 1 else 0.0)


def comparison(llm: Any, scores: Any, results_rows: Sequence[dict[str, Any]], benches: Sequence[Benchmark],
               encoder_names: Sequence[str], speed: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per (data set, k, competitor): F1 mean/std over the LLM's samplings, sentences scored, USD and s per 1k."""
    by_name = {b.name: b for b in benches}
    cells: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for cell in llm.cells:
        cells.setdefault((cell["dataset"], cell["llm"], cell["k"]), []).append(cell)
    values: dict[tuple[str, str, str, int, int], float] = {}
    for r in results_rows:
        values[(r["protocol"], r["encoder"], r["dataset"], r["k"], r["seed"])] = r["value"]
    out: list[dict[str, Any]] = []
    for dataset, k in sorted({(d, k) for d, _, k in cells}, key=lambda x: ([b.name for b in benches].index(x[0]), x[1])):
        bench = by_name[dataset]
        offsets = np.concatenate([[0], np.cumsum([len(s.tokens) for s in bench.test.sentences])])
        llms = [name for d, name, kk in cells if d == dataset and kk == k]
        for name in llms:
            mine = cells[(dataset, name, k)]
            seeds = [c["seed"] for c in mine]
            costs = [c["usd_per_1k"] for c in mine if c["usd_per_1k"] is not None]
            times = [c["s_per_1k"] for c in mine if c["s_per_1k"] is not None]
            out.append({
                "dataset": dataset, "k": k, "competitor": name, "kind": "llm",
                "token": _mean_std([values[("llm", name, dataset, k, s)] for s in seeds if ("llm", name, dataset, k, s) in values]),
                "entity": _mean_std([values[("llm_entity", name, dataset, k, s)] for s in seeds
                                     if ("llm_entity", name, dataset, k, s) in values]),
                "scored": sum(c["scored"] for c in mine), "asked": sum(c["test_sentences"] for c in mine),
                "samplings": len(mine),
                "usd_per_1k": statistics.mean(costs) if costs else None,
                "tokens_per_sentence": statistics.mean([c["tokens_per_sentence"] for c in mine if c["tokens_per_sentence"]] or [0]),
                "s_per_1k": statistics.mean(times) if times else None,
                "time_measured": ", ".join(sorted({c["time_measured"] for c in mine if c["time_measured"]})) or None,
            })
            for encoder in encoder_names:
                token, partial = [], False
                for s in seeds:
                    pred = scores.predictions.get((encoder, dataset, k, s))
                    subset = llm.scored_indices.get((name, dataset, k, s), [])
                    if pred is None or not subset:
                        continue
                    partial |= len(subset) < len(bench.test.sentences)
                    y_pred = np.concatenate([pred[offsets[i]:offsets[i + 1]] for i in subset])
                    y_gold = word_labels([bench.test.sentences[i] for i in subset], bench.types)
                    token.append(token_macro_f1(y_gold, y_pred, bench.types)[0])
                entity = [values[("finetune", encoder, dataset, k, s)] for s in seeds if ("finetune", encoder, dataset, k, s) in values]
                speed_of = speed.get((encoder, dataset), {})
                if not token and not entity:
                    continue
                out.append({
                    "dataset": dataset, "k": k, "competitor": encoder, "kind": "encoder", "vs": name,
                    "token": _mean_std(token), "entity": _mean_std(entity), "entity_full_test": bool(entity) and partial,
                    "scored": sum(len(llm.scored_indices.get((name, dataset, k, s), [])) for s in seeds),
                    "asked": sum(c["test_sentences"] for c in mine), "samplings": len(mine),
                    "usd_per_1k": 0.0, "tokens_per_sentence": None,
                    "s_per_1k": speed_of.get("s_per_1k"), "time_measured": speed_of.get("measured"),
                    "device": speed_of.get("device"),
                })
    return out
