"""Protocol "llm" (paper section 6): an LLM tags each test sentence with a support set as worked examples.

The competitor the paper sets NuNER against: no training at all, the k examples are shown
in the prompt. It runs on the same benchmarks, the same support sets (``sampling.py``) and
the same test sentences as the encoders, and is scored with the same functions
(``metrics.py``): token macro-F1 (protocol ``llm``, beside the frozen probe) and strict
IOB2 entity micro-F1 (protocol ``llm_entity``, beside fine-tuning).

**Prompt** (``PROMPT_VERSION``; chat messages, so any OpenAI-compatible server works):

- system: the task, the entity types *by name* (as the data set spells them), the answer
  format, and "NONE" for a sentence without entity;
- then per support sentence, in sampling order, a worked example: a user turn
  ``Input: <the sentence's words joined by spaces>`` and an assistant turn with its gold
  answer;
- last, the user turn ``Input: <test sentence>``. Nothing of the test sentence's labels
  is in the prompt (a test checks it).

**Answer format**: one line per entity, ``<the entity's words as in the sentence> <> <type>``
(the annotation prompt's ``<>`` separator, which models follow reliably), in the order of
the sentence, an entity whose words occur twice listed twice; ``NONE`` when there is none.

**Parsing** (:func:`parse_answer`): lines are read one by one; bullets, numbering, code
fences are stripped, and quotes around a mention unless they are among the sentence's words. A line without ``<>`` (or with an empty side) is a bad
line; a type is matched exactly, else ignoring case, spaces, ``_`` and ``-``, else the
line is dropped as ``unknown_type``. A mention is found in the sentence's words exactly,
else ignoring case, else ignoring spaces (``Joe's`` for ``Joe 's``); not found, it is
dropped as ``not_in_sentence``. Listings are placed in answer order (the prompt asks for
the sentence's order), each on its mention's first free occurrence after the previous
listing, else its first free one: a mention listed twice takes two occurrences
(``repeated`` counts the second and later, each with its own type: "good <> Rating",
"good <> Price"); a listing beyond the occurrences is ignored (``extra_listings``: a
duplicate line), an occurrence beyond the listings stays untagged (``occurrences_left``),
a listing whose free occurrences all lie inside mentions already placed is dropped
(``overlapping``: "burger" when "burger king" took its only occurrence). An empty answer is scored as no entity (``empty``); an answer with no
usable line at all is ``unparsable`` and scored as no entity. Every one of these is counted, per cell, in the manifest and in
``llm_answers.parquet`` (one row per test sentence and cell, raw answer included).

A test sentence without an answer (the budget stopped the run, the request failed after
its retries, offline without a cached answer) is not scored: the rows' ``test_sentences``
is the number scored, the summary says "N of M", and the artifact is marked incomplete so
that the next run of the stage asks for exactly the missing ones (the rest come from the
response cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nuner_core.annotation.batch import Outcome, complete_batches
from nuner_core.evaluation.benchmarks import Benchmark
from nuner_core.evaluation.config import EvaluateConfig, LLMSpec
from nuner_core.evaluation.frozen import word_labels
from nuner_core.evaluation.sampling import SupportSet
from nuner_core.evaluation.timing import TimingStore
from nuner_core.iob2.conll import Sentence, mentions
from nuner_core.iob2.metrics import entity_micro_f1, token_macro_f1
from nuner_core.stage_api import Progress

log = logging.getLogger(__name__)

PROMPT_VERSION = "ner-icl-v1"  # bump when the prompt's text or layout changes
INPUT = "Input: "
NONE = "NONE"
SEPARATOR = " <> "
SYSTEM = """You are a named entity recognition system. The entity types are: {types}.

For the sentence after "Input:", list every entity of these types that it contains, one per line, as:
<the entity's words, exactly as written in the sentence> <> <its type>
Use only the entity types listed above, spelled as above. List the entities in the order they occur; \
if the same words are an entity twice, list them twice. \
If the sentence contains no entity of these types, answer {none}. Answer with the list only."""

_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)])\s+")
_FENCE = re.compile(r"^\s*```")
_NONE_ANSWER = re.compile(r"^\W*(none|no entities?)\W*$", re.IGNORECASE)
_QUOTES = "\"'`“”‘’"


# ---------------------------------------------------------------- the prompt


def sentence_text(sentence: Sentence) -> str:
    """What the LLM reads: the words joined by single spaces."""
    return " ".join(sentence.tokens)


def gold_answer(sentence: Sentence) -> str:
    """The answer in the prompt's format: one line per mention, in the sentence's order; NONE when none."""
    lines = [" ".join(sentence.tokens[start:end]) + SEPARATOR + type_ for start, end, type_ in mentions(sentence.tags)]
    return "\n".join(lines) if lines else NONE


def example_messages(types: Sequence[str], examples: Sequence[Sentence]) -> list[dict[str, str]]:
    """The system message and the worked examples: the part of every prompt a support set shares."""
    messages = [{"role": "system", "content": SYSTEM.format(types=", ".join(types), none=NONE)}]
    for example in examples:
        messages.append({"role": "user", "content": INPUT + sentence_text(example)})
        messages.append({"role": "assistant", "content": gold_answer(example)})
    return messages


def build_messages(types: Sequence[str], examples: Sequence[Sentence], sentence: Sentence) -> list[dict[str, str]]:
    """The full prompt for one test sentence: its words only, never its tags."""
    return example_messages(types, examples) + [{"role": "user", "content": INPUT + sentence_text(sentence)}]


# ---------------------------------------------------------------- parsing the answer


@dataclass
class ParseStats:
    answers: int = 0  # answers parsed (one per scored test sentence)
    none: int = 0  # answered NONE: no entity
    empty: int = 0  # empty answers: scored as no entity
    unparsable: int = 0  # non-empty answers without one usable "mention <> type" line: scored as no entity
    truncated: int = 0  # answers cut at max_tokens, parsed as far as they go
    lines: int = 0  # non-blank answer lines (NONE and code fences excluded)
    bad_lines: int = 0  # lines without "<>", or with an empty mention or type: ignored
    unknown_type: int = 0  # lines whose type is not among the listed ones: dropped
    type_normalised: int = 0  # types matched ignoring case, spaces, "_" and "-" ("restaurant name" for Restaurant_Name)
    not_in_sentence: int = 0  # mentions whose words are not in the sentence: dropped
    case_insensitive: int = 0  # mentions found in the sentence only ignoring case
    spacing: int = 0  # mentions found only ignoring spaces ("Joe's" for "Joe 's")
    extra_listings: int = 0  # a mention listed more often than its words occur (a duplicate line): ignored
    overlapping: int = 0  # listings whose free occurrences all overlap a longer mention already placed: dropped
    mentions: int = 0  # distinct mentions placed on the sentence's words
    repeated: int = 0  # a mention's second, third... listing placed on its next occurrence
    occurrences_left: int = 0  # occurrences of a listed mention beyond its listings: left untagged

    def add(self, other: "ParseStats") -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def _type_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).casefold()


def _find(tokens: Sequence[str], mention: str) -> tuple[list[tuple[int, int]], str]:
    """Every (start, end) of ``mention`` in ``tokens`` and how it was matched: exact, case, spacing or ''."""
    words = mention.split()
    n = len(words)
    if n == 0:
        return [], ""
    exact = [(i, i + n) for i in range(len(tokens) - n + 1) if list(tokens[i:i + n]) == words]
    if exact:
        return exact, "exact"
    lowered = [w.casefold() for w in words]
    folded = [(i, i + n) for i in range(len(tokens) - n + 1) if [t.casefold() for t in tokens[i:i + n]] == lowered]
    if folded:
        return folded, "case"
    target = "".join(lowered)
    spaced = []
    for i in range(len(tokens)):
        joined = ""
        for j in range(i, len(tokens)):
            joined += tokens[j].casefold()
            if len(joined) >= len(target):
                if joined == target:
                    spaced.append((i, j + 1))
                break
    return spaced, "spacing" if spaced else ""


def parse_answer(answer: str, tokens: Sequence[str], types: Sequence[str],
                 finish_reason: str | None = None) -> tuple[tuple[str, ...], ParseStats]:
    """IOB2 tags for ``tokens`` from an LLM answer, and what the parser met; never raises."""
    stats = ParseStats(answers=1, truncated=int(finish_reason == "length"))
    tags = ["O"] * len(tokens)
    text = answer.strip()
    if not text:
        stats.empty = 1
        return tuple(tags), stats
    if _NONE_ANSWER.match(text):
        stats.none = 1
        return tuple(tags), stats
    by_key = {_type_key(t): t for t in types}
    listings: list[tuple[str, str]] = []  # (mention, type) in answer order
    found: dict[str, list[tuple[int, int]]] = {}  # mention -> its occurrences in the sentence
    usable = none_lines = 0
    for raw in text.splitlines():
        if _NONE_ANSWER.match(raw):
            none_lines += 1
            continue
        if not raw.strip() or _FENCE.match(raw):
            continue
        stats.lines += 1
        line = _BULLET.sub("", raw).strip()
        if "<>" not in line:
            stats.bad_lines += 1
            continue
        mention, _, rest = line.partition("<>")
        type_name = rest.split("<>")[0].strip().strip(_QUOTES + " .,;")
        mention = " ".join(mention.split())
        if mention.strip(_QUOTES) != mention and not _find(tokens, mention)[0]:
            mention = " ".join(mention.strip(_QUOTES).split())  # quoted by the LLM, not part of the words
        if not mention or not type_name:
            stats.bad_lines += 1
            continue
        usable += 1
        if type_name in types:
            type_ = type_name
        elif _type_key(type_name) in by_key:
            type_ = by_key[_type_key(type_name)]
            stats.type_normalised += 1
        else:
            stats.unknown_type += 1
            continue
        if mention not in found:
            spans, how = _find(tokens, mention)
            found[mention] = spans
            stats.case_insensitive += how == "case"
            stats.spacing += how == "spacing"
        if not found[mention]:
            stats.not_in_sentence += 1
            continue
        listings.append((mention, type_))
    if usable == 0:
        if stats.lines == 0 and none_lines:  # NONE, fenced or repeated
            stats.none = 1
        else:
            stats.unparsable = 1
        return tuple(tags), stats
    # In answer order (the prompt asks for the sentence's order): each listing takes its mention's first free
    # occurrence at or after the previous listing's end, else its first free one anywhere.
    taken = [False] * len(tokens)
    used: dict[str, list[tuple[int, int]]] = {}
    cursor = 0
    for mention, type_ in listings:
        mine = used.setdefault(mention, [])
        unused = [span for span in found[mention] if span not in mine]
        free = [span for span in unused if not any(taken[span[0]:span[1]])]
        if not free:
            if unused:
                stats.overlapping += 1  # its remaining occurrences lie inside mentions already placed
            else:
                stats.extra_listings += 1  # listed more often than the words occur
            continue
        start, end = next((span for span in free if span[0] >= cursor), free[0])
        for i in range(start, end):
            taken[i] = True
            tags[i] = ("B-" if i == start else "I-") + type_
        stats.mentions += not mine
        stats.repeated += bool(mine)
        mine.append((start, end))
        cursor = end
    stats.occurrences_left = sum(1 for mention, spans in found.items() if mention in used
                                 for span in spans if span not in used[mention] and not any(taken[span[0]:span[1]]))
    return tuple(tags), stats


# ---------------------------------------------------------------- the protocol


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
    return "llm-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


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
    environ: Any = None,
    clock: Any = None,
) -> LLMScores:
    """Every configured LLM on every selected benchmark and cell of ``grid``; see the module docstring."""
    import time

    out = LLMScores()
    started = time.perf_counter()
    selected = [b for b in benches if config.llm.benchmarks is None or b.name in config.llm.benchmarks]
    for spec in config.llms:
        cells: list[tuple[Benchmark, tuple[int, int], list[int], int]] = []  # data set, cell, test indices, shared prompt chars
        batches = []
        for bench in selected:
            subset = llm_test_indices(bench, config)
            for cell in grid:
                examples = [bench.pool.sentences[i] for i in supports[bench.name][cell].indices]
                shared = example_messages(bench.types, examples)  # one list per cell, shared by its prompts
                batches.append([shared + [{"role": "user", "content": INPUT + sentence_text(bench.test.sentences[i])}]
                                for i in subset])
                cells.append((bench, cell, subset, sum(len(m["content"]) for m in shared)))
        cache_dir = Path(spec.cache_dir) if spec.cache_dir else llm_cache
        result = complete_batches(spec, batches, cache_dir, field_name=f"evaluate.llms[{spec.name}]", progress=progress,
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
                        "rest are not: rerun with a higher max_cost / max_requests to continue from the cache",
                        spec.name, result.stopped)
    out.seconds = time.perf_counter() - started
    return out


def _score_cell(spec: LLMSpec, identity: str, bench: Benchmark, support: SupportSet, subset: list[int],
                outcomes: Sequence[Outcome], price: Any, shared_chars: int, out: LLMScores) -> dict[str, Any]:
    """Parse and score one cell's answers; append its result rows and answer rows; return its accounting."""
    parse = ParseStats()
    gold: list[Sentence] = []
    pred: list[Sentence] = []
    scored: list[int] = []
    missing: Counter = Counter()
    cost = 0.0
    prompt_tokens = completion_tokens = from_cache = 0
    for index, outcome in zip(subset, outcomes):
        sentence = bench.test.sentences[index]
        row = {"llm": spec.name, "dataset": bench.name, "k": support.k, "seed": support.seed, "test_index": index,
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
