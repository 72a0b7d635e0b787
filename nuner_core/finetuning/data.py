"""The labelled data of a fine-tuning run: read, converted to words + IOB2 tags, and checked.

Three sources (``FinetuneConfig.data``):

- files in CoNLL/BIO (the evaluation's reader: IOB1/IOB2/IO, any case, repaired to IOB2);
- files in JSON lines, one ``{"text", "entities": [{"start", "end", "label"}]}`` per line with
  character offsets (end exclusive): the text is split into words (``nuner_core.text.words``, as ``nuner tag`` splits it) and
  each span becomes ``B-label I-label ...`` over the words it covers;
- a registry benchmark and a k: the training set is the k~2k support set the evaluation
  samples, dev a seeded sample of the rest of the pool, test a seeded subsample of its test split.

Nothing is dropped silently. A span is *exact* when it starts and ends on word boundaries;
surrounding whitespace is trimmed (counted); a span that cuts into a word is snapped to the
words it touches (``span_repair: snap``) or rejected (``reject``), counted either way; spans
that overlap an earlier one, lie outside the text or cover no word are rejected and counted
by reason. Label types are case-insensitive (spelled as first seen, across files and formats),
so JSON lines and CoNLL of the same data give the same labels. The label set comes from the
training data; a label in dev or test that never occurs in train is an error naming it.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nuner_core.finetuning.config import BenchmarkData, FilesData
from nuner_core.iob2.conll import Sentence, TypeNames, entity_types, mentions, read_conll
from nuner_core.jsonl import JsonLinesError, read_json_lines
from nuner_core.paths import expand_path
from nuner_core.stage_api import StageError
from nuner_core.text.words import segment_words
from nuner_core.token_classifier.splits import LabelledSplits

SPLITS = ("train", "dev", "test")


class DataFormatError(StageError, ValueError):
    """A record that is not what the format says; the message names the file and the line."""


@dataclass
class SpanCounts:
    """What happened to every JSON-lines span (and record); ``rejected`` says why spans were dropped."""

    records: int = 0
    spans: int = 0
    exact: int = 0
    whitespace_trimmed: int = 0  # leading/trailing whitespace removed, then exact or repaired
    snapped: int = 0  # cut into a word; widened to the words it touches
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> spans
    records_dropped: Counter[str] = field(default_factory=Counter)  # reason -> records (a text with no word)

    def add(self, other: SpanCounts) -> None:
        for name in ("records", "spans", "exact", "whitespace_trimmed", "snapped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected.update(other.rejected)
        self.records_dropped.update(other.records_dropped)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records, "spans": self.spans, "exact": self.exact,
            "whitespace_trimmed": self.whitespace_trimmed, "snapped": self.snapped,
            "rejected": dict(self.rejected), "records_dropped": dict(self.records_dropped),
        }  # fmt: skip


def spans_to_tags(
    text: str, spans: list[tuple[int, int, str]], repair: Literal["snap", "reject"], counts: SpanCounts
) -> tuple[list[tuple[int, int]], list[str]]:
    """Word offsets of ``text`` and their IOB2 tags; ``spans`` are ``(start, end, type)`` character spans."""
    words = [(s, e) for s, e in segment_words(text).tolist()]
    tags = ["O"] * len(words)
    starts = [s for s, _ in words]  # both increasing: words are disjoint and in order
    ends = [e for _, e in words]
    placed_first: list[int] = []  # the word ranges taken, disjoint, sorted: [first, last]
    placed_last: list[int] = []
    for start, end, label in sorted(spans, key=lambda s: (s[0], -(s[1] - s[0]))):  # earlier, then longer, first
        counts.spans += 1
        if not (0 <= start < end <= len(text)):
            counts.rejected["invalid_offsets"] += 1  # outside the text, or empty
            continue
        stripped = text[start:end]
        lead, trail = len(stripped) - len(stripped.lstrip()), len(stripped) - len(stripped.rstrip())
        if lead or trail:
            if lead + trail >= end - start:
                counts.rejected["whitespace_only"] += 1
                continue
            start, end = start + lead, end - trail
            counts.whitespace_trimmed += 1
        # The words it touches (ends[i] > start and starts[i] < end), found by bisection: linear in words + spans overall.
        first, last = bisect_right(ends, start), bisect_left(starts, end) - 1
        if first > last:
            counts.rejected["covers_no_word"] += 1  # e.g. only characters the segmentation skips
            continue
        if starts[first] != start or ends[last] != end:
            if repair == "reject":
                counts.rejected["off_word_boundary"] += 1
                continue
            counts.snapped += 1
        else:
            counts.exact += 1
        k = bisect_right(placed_first, last)  # the ranges before k start at or before ``last``; of them only k-1 can reach ``first``
        if k and placed_last[k - 1] >= first:
            counts.rejected["overlaps_another_span"] += 1  # IOB2 has no nesting: the earlier (then longer) one stays
            continue
        placed_first.insert(k, first)
        placed_last.insert(k, last)
        tags[first] = f"B-{label}"
        for i in range(first + 1, last + 1):
            tags[i] = f"I-{label}"
    return words, tags


def read_jsonl(path: Path, repair: Literal["snap", "reject"], types: TypeNames) -> tuple[list[Sentence], SpanCounts]:
    """Sentences (words + IOB2 tags) from a JSON-lines file of texts with character spans."""
    counts = SpanCounts()
    sentences: list[Sentence] = []
    try:
        records = list(read_json_lines(path))
    except JsonLinesError as exc:
        raise DataFormatError(str(exc)) from None
    for lineno, record in records:
        where = f"{path}:{lineno}"
        if not isinstance(record.get("text"), str):
            raise DataFormatError(f"{where}: expected an object with a string 'text', got {json.dumps(record)[:80]}")
        raw = record.get("entities", [])
        if not isinstance(raw, list):
            raise DataFormatError(f"{where}: 'entities' must be a list of {{start, end, label}}")
        spans = []
        for entity in raw:
            ok = isinstance(entity, dict) and all(type(entity.get(k)) is int for k in ("start", "end"))
            if not ok or not isinstance(entity.get("label"), str) or not entity["label"].strip():
                raise DataFormatError(f"{where}: entity {entity!r} needs integer 'start', 'end' and a non-empty string 'label'")
            spans.append((entity["start"], entity["end"], types(_type_name(entity["label"].strip(), where))))
        counts.records += 1
        text = record["text"]
        words, tags = spans_to_tags(text, spans, repair, counts)
        if not words:
            counts.records_dropped["no_words"] += 1  # its spans, if any, were rejected (and counted) above
            continue
        sentences.append(Sentence(tuple(text[s:e] for s, e in words), tuple(tags)))
    return sentences, counts


def _type_name(label: str, where: str) -> str:
    """An entity type as given in JSON lines: the tags are made from it, so a tag (``O``, ``B-LOC``) would become ``B-O``, ``B-B-LOC``."""
    if label.upper() == "O":
        raise DataFormatError(f"{where}: entity label {label!r} is the IOB2 tag for no entity, not a type: leave such spans out")
    if label[:2].upper() in ("B-", "I-"):
        raise DataFormatError(f"{where}: entity label {label!r} is an IOB2 tag, not a type: give the type ({label[2:]!r}); "
                              "the B-/I- tags are made from it")  # fmt: skip
    return label


def file_format(path: Path, configured: str) -> str:
    if configured != "auto":
        return configured
    return "jsonl" if path.suffix.lower() in {".jsonl", ".json"} else "conll"


@dataclass
class FinetuneData(LabelledSplits):
    """Train, dev and test sentences (IOB2), the entity types of the training data (sorted), and what reading them counted."""

    sources: dict[str, str]  # split -> where it came from (a file, or a benchmark description)
    stats: dict[str, Any]  # per split: sentences, words, mentions per type, reader counts
    dropped: dict[str, int]  # reason -> count (spans and records), over all splits


def check_labels(types: list[str], split: str, source: str, sentences: list[Sentence], train_source: str) -> None:
    """A type in dev/test that the training data never shows is an error naming it and the file."""
    unknown = Counter(t for s in sentences for _, _, t in mentions(s.tags) if t not in types)
    if unknown:
        listed = ", ".join(f"{t!r} ({n} mention{'s' if n > 1 else ''})" for t, n in sorted(unknown.items()))
        raise StageError(
            f"{split} data {source} has label(s) that never occur in the training data {train_source}: {listed}. "
            f"The model could never predict them; training labels are {types}. "
            f"Add training examples with these labels, or relabel or remove them in {split}."
        )


def _split_stats(sentences: list[Sentence]) -> dict[str, Any]:
    per_type = Counter(t for s in sentences for _, _, t in mentions(s.tags))
    return {"sentences": len(sentences), "words": sum(len(s.tokens) for s in sentences), "mentions": dict(sorted(per_type.items()))}


def load_files(source: FilesData, repair: Literal["snap", "reject"]) -> FinetuneData:
    types = TypeNames()  # one spelling per type across every file and format
    splits: dict[str, list[Sentence]] = {}
    sources: dict[str, str] = {}
    stats: dict[str, Any] = {}
    dropped: Counter[str] = Counter()
    for split in SPLITS:
        configured = getattr(source, split)
        if configured is None:
            splits[split] = []
            continue
        path = Path(expand_path(configured))
        if not path.is_file():
            raise StageError(f"finetune.data.{split}: {path} does not exist (configured as {configured!r})")
        if file_format(path, source.format) == "jsonl":
            sentences, counts = read_jsonl(path, repair, types)
            reader = {"format": "jsonl", **counts.as_dict()}
            dropped.update({f"spans_{r}": n for r, n in counts.rejected.items()})
            dropped.update({f"records_{r}": n for r, n in counts.records_dropped.items()})
        else:
            sentences, conll_stats = read_conll(path, types)
            reader = {"format": "conll", **conll_stats.as_dict()}
        splits[split], sources[split] = sentences, str(path)
        stats[split] = {**_split_stats(sentences), "reader": reader}
    return _checked(splits, sources, stats, dict(dropped))


def load_benchmark_data(source: BenchmarkData) -> FinetuneData:
    from nuner_core.evaluation.benchmarks import load_benchmark, resolve_spec
    from nuner_core.evaluation.sampling import mention_counts, sample_support

    bench = load_benchmark(resolve_spec(source.name), source.test_size, source.subsample_seed)
    support = sample_support(mention_counts(bench.pool.sentences), bench.types, source.k, source.sampling_seed)
    taken = set(support.indices)
    rest = np.array([i for i in range(len(bench.pool.sentences)) if i not in taken])
    rng = np.random.default_rng([source.subsample_seed, source.k, source.sampling_seed])
    dev_ids = np.sort(rng.choice(rest, size=min(source.dev_size, len(rest)), replace=False))
    splits = {
        "train": [bench.pool.sentences[i] for i in support.indices],
        "dev": [bench.pool.sentences[i] for i in dev_ids],
        "test": bench.test.sentences,
    }
    name = f"benchmark {bench.name}"
    sources = {
        "train": f"{name}: k={source.k} support set #{source.sampling_seed} of its training pool",
        "dev": f"{name}: {len(dev_ids)} other sentences of its training pool",
        "test": f"{name}: {len(bench.test.sentences)} of {bench.test_total} test sentences",
    }
    stats: dict[str, Any] = {split: _split_stats(s) for split, s in splits.items()}
    stats["train"]["support_set"] = {"k": support.k, "sampling_seed": support.seed, "counts": support.counts, "shortfall": support.shortfall}
    # Types the support set could not reach at all are not in train: the benchmark's dev/test mentions of them would
    # fail the label check, so for a benchmark they are reported and removed from dev/test instead.
    missing = sorted(set(bench.types) - set(entity_types(splits["train"])))
    dropped: dict[str, int] = {}
    if missing:
        for split in ("dev", "test"):
            n = sum(1 for s in splits[split] for _, _, t in mentions(s.tags) if t in missing)
            splits[split] = [Sentence(s.tokens, tuple("O" if t[2:] in missing else t for t in s.tags)) for s in splits[split]]
            dropped[f"{split}_mentions_of_types_missing_from_support_set"] = n
        stats["types_missing_from_support_set"] = missing
    return _checked(splits, sources, stats, dropped)


def _checked(splits: dict[str, list[Sentence]], sources: dict[str, str], stats: dict[str, Any], dropped: dict[str, int]) -> FinetuneData:
    if not splits["train"]:
        raise StageError(f"the training data {sources.get('train')} holds no sentence")
    types = entity_types(splits["train"])
    if not types:
        raise StageError(f"the training data {sources['train']} has no entity mention: nothing to learn")
    for split in ("dev", "test"):
        check_labels(types, split, sources.get(split, ""), splits[split], sources["train"])
    return FinetuneData(splits["train"], splits["dev"], splits["test"], types, sources, stats, dropped)


def load_data(source: FilesData | BenchmarkData, repair: Literal["snap", "reject"]) -> FinetuneData:
    return load_files(source, repair) if isinstance(source, FilesData) else load_benchmark_data(source)
