"""Named benchmarks: the registry, and loading one into a pool (to sample from) and a test set.

A user adds a benchmark with a few lines of config (an inline ``BenchmarkSpec`` in
``evaluate.benchmarks``)::

    evaluate:
      benchmarks:
        - mit_restaurant                      # a registry name
        - name: my_corpus                     # or a spec of one's own
          source: {kind: files, train: /data/mine/train.bio, test: /data/mine/test.bio}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from nuner_core.evaluation.config import SHARED_BENCHMARKS as SHARED_BENCHMARKS  # re-exported: the contract other stages read
from nuner_core.evaluation.config import BenchmarkSpec, FileSource, HubSource
from nuner_core.hashing import file_sha256, short_hash
from nuner_core.iob2.conll import (
    ConllStats,
    Sentence,
    TypeNames,
    entity_types,
    parse_tag,
    read_conll,
    to_iob2,
)
from nuner_core.paths import expand_path
from nuner_core.stage_api import StageError

_SHARED = "${assets}/benchmarks"
_TNER_FILES = {"train": "dataset/train*.json", "test": "dataset/test.json"}

REGISTRY: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        # The demo's offline copies (../shared/assets/benchmarks).
        BenchmarkSpec(name="mit_restaurant", source=FileSource(train=f"{_SHARED}/mit_restaurant/train.txt", test=f"{_SHARED}/mit_restaurant/test.txt")),
        BenchmarkSpec(name="mit_movie", source=FileSource(train=f"{_SHARED}/mit_movie/engtrain.bio", test=f"{_SHARED}/mit_movie/engtest.bio")),
        BenchmarkSpec(
            name="mit_movie_trivia",
            source=FileSource(train=f"{_SHARED}/mit_movie_trivia/trivia10k13train.bio", test=f"{_SHARED}/mit_movie_trivia/trivia10k13test.bio"),
        ),
        # JNLPBA's original training file is not shipped: devel.tsv (held out from it) is the pool.
        BenchmarkSpec(name="jnlpba", source=FileSource(train=f"{_SHARED}/jnlpba/devel.tsv", test=f"{_SHARED}/jnlpba/test.tsv")),
        # The paper's four data sets, as the tner copies on the Hugging Face hub (need network). Their
        # loading scripts no longer run under datasets>=4, so their JSON files are read directly:
        # {"tokens": [...], "tags": [ids]} per line, ids named by dataset/label.json.
        *(BenchmarkSpec(name=f"tner/{name}", source=HubSource(path=f"tner/{name}", data_files=_TNER_FILES))
          for name in ("ontonotes5", "bionlp2004", "mit_restaurant", "mit_movie_trivia")),
    )
}

# The data sets of the paper's Table 3 (its "MIT Movie" is the trivia10k13 corpus tner ships).
PAPER_BENCHMARKS = ("tner/ontonotes5", "tner/bionlp2004", "tner/mit_restaurant", "tner/mit_movie_trivia")


def resolve_spec(item: Union[str, BenchmarkSpec]) -> BenchmarkSpec:
    if isinstance(item, BenchmarkSpec):
        return item
    try:
        return REGISTRY[item]
    except KeyError:
        raise StageError(
            f"unknown benchmark {item!r}; registered: {', '.join(REGISTRY)} "
            f"(or give an inline spec with name and source)"
        ) from None


@dataclass
class Split:
    sentences: list[Sentence]
    fingerprint: str  # identity of exactly these sentences (file contents + loader version)
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Benchmark:
    name: str
    types: list[str]  # every entity type of pool and test, sorted
    pool: Split  # support sets are sampled from it
    test: Split  # possibly a seeded subsample of the full test split
    test_total: int  # sentences in the full test split

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "types": self.types,
            "pool_sentences": len(self.pool.sentences),
            "test_sentences": len(self.test.sentences),
            "test_total": self.test_total,
            "pool": self.pool.stats,
            "test": self.test.stats,
        }


LOADER_VERSION = "1"  # bump when parsing changes what a file yields (feature caches are keyed on it)


def load_benchmark(spec: BenchmarkSpec, max_test: int | None = None, test_seed: int = 0) -> Benchmark:
    """Pool and test sentences (IOB2) of a benchmark; the test set subsampled when ``max_test`` is set."""
    types = TypeNames()
    if isinstance(spec.source, FileSource):
        pool = _file_split(spec.source.train, types)
        test = _file_split(spec.source.test, types)
    else:
        pool = _hub_split(spec.source, spec.source.train_split, types)
        test = _hub_split(spec.source, spec.source.test_split, types)
    if not pool.sentences:
        raise StageError(f"benchmark {spec.name!r}: the training pool is empty")
    if not test.sentences:
        raise StageError(f"benchmark {spec.name!r}: the test split is empty")
    total = len(test.sentences)
    if max_test is not None and total > max_test:
        keep = np.sort(np.random.default_rng(test_seed).choice(total, size=max_test, replace=False))
        test = Split(
            [test.sentences[i] for i in keep],
            _hash([test.fingerprint, "subsample", max_test, test_seed]),
            {**test.stats, "subsample": {"of": total, "kept": max_test, "seed": test_seed}},
        )
    return Benchmark(spec.name, entity_types(pool.sentences + test.sentences), pool, test, total)


def _file_split(configured: str, types: TypeNames) -> Split:
    path = Path(expand_path(configured))
    if not path.is_file():
        raise StageError(f"benchmark file {path} does not exist (configured as {configured!r})")
    sentences, stats = read_conll(path, types)
    return Split(sentences, _hash([LOADER_VERSION, file_sha256(path)]), {"file": str(path), **stats.as_dict()})


def _hub_split(source: HubSource, split: str, types: TypeNames) -> Split:
    """A split of a hub data set with word lists and tags (strings, or ids named by a ClassLabel / label file)."""
    import datasets  # heavy import, only when a hub benchmark is used

    try:
        if source.data_files is not None:  # the repo's JSON files, read without its loading script
            if split not in source.data_files:
                raise StageError(f"hub benchmark {source.path}: data_files has no entry for split {split!r}")
            local = Path(expand_path(source.path))  # a local copy of the repo works the same way
            url = str(local / source.data_files[split]) if local.is_dir() else f"hf://datasets/{source.path}/{source.data_files[split]}"
            data = datasets.load_dataset("json", data_files={split: url}, split=split)
        else:
            data = datasets.load_dataset(source.path, source.name, split=split)
    except StageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loading failure becomes one clear stage error
        raise StageError(f"cannot load hub benchmark {source.path} (split {split}): {exc}") from exc
    names = _tag_names(source, data)
    stats = ConllStats()
    sentences: list[Sentence] = []
    empty = 0
    for i, record in enumerate(data):
        words = [str(w) for w in record[source.tokens_field]]
        raw = [names[t] if names is not None else str(t) for t in record[source.tags_field]]
        parsed = [parse_tag(t, types) for t in raw]
        if any(p is None for p in parsed) or len(raw) != len(words):
            raise StageError(f"hub benchmark {source.path} split {split} record {i}: bad tags {raw!r} for words {words!r}")
        if not words:
            empty += 1
            continue
        tags, repaired = to_iob2(parsed)  # type: ignore[arg-type]
        stats.repaired_tags += repaired
        stats.tokens += len(words)
        sentences.append(Sentence(tuple(words), tuple(tags)))
    stats.sentences = len(sentences)
    fingerprint = _hash([LOADER_VERSION, source.model_dump(), split, getattr(data, "_fingerprint", None)])
    return Split(sentences, fingerprint, {"hub": source.path, "split": split, **stats.as_dict(), "empty_records": empty})


def _tag_names(source: HubSource, data: Any) -> list[str] | None:
    feature = data.features[source.tags_field]
    inner = getattr(feature, "feature", None)
    if inner is not None and hasattr(inner, "names"):
        return list(inner.names)  # a Sequence(ClassLabel)
    first = next(iter(data), None)
    if first is None or not first[source.tags_field] or isinstance(first[source.tags_field][0], str):
        return None  # tags are strings already
    if source.label_file is None:
        raise StageError(f"hub benchmark {source.path}: tags are ids without names; set source.label_file")
    local = Path(expand_path(source.path)) / source.label_file
    if local.is_file():
        label2id = json.loads(local.read_text())
    else:
        from huggingface_hub import hf_hub_download

        label2id = json.loads(Path(hf_hub_download(source.path, source.label_file, repo_type="dataset")).read_text())
    names = [""] * len(label2id)
    for label, index in label2id.items():
        names[int(index)] = label
    return names


def _hash(payload: Any) -> str:
    return short_hash(json.dumps(payload, sort_keys=True, default=str))


def spec_fingerprint(spec: BenchmarkSpec) -> object:
    """Cheap identity of a benchmark's inputs for the artifact key; never raises (the stage reports errors)."""
    if isinstance(spec.source, HubSource):
        return spec.model_dump()
    prints: list[object] = [spec.name]
    for configured in (spec.source.train, spec.source.test):
        path = Path(expand_path(configured))
        prints.append(file_sha256(path) if path.is_file() else f"missing:{path}")
    return prints
