"""Few-shot support sets, seeded: k~2k mentions (Ding et al. 2021) or k_w~2k_w words per type (NuNER section 6).

``k2k`` (the default, every protocol of paper section 4): over all entity types of a data
set, sentences are examined in a seeded random order; one is accepted only if it mentions
some type that still has fewer than k mentions and no type would exceed 2k mentions with
it; sampling stops when every type has at least k.

``kw`` (the paper's comparison with LLMs, section 6): the same greedy procedure counting
entity *words* instead of mentions (a word tagged B-X or I-X counts one for X): a
sentence is accepted if some type it covers still has fewer than k_w words and no type
would pass 2·k_w words with it. A support set is then measured in words per type, which
is what bounds an LLM prompt (and the annotation effort) rather than the mention count.
The 2·k_w ceiling mirrors k~2k; a type whose mentions are longer than 2·k_w words can
never be drawn and is reported short.

Either way a rejected sentence can never become acceptable later (counts only grow), so
one pass over the pool is exhaustive: the attempt cap only shortens it. A type too rare
to reach k does not fail the run: the support set keeps what was found and ``shortfall``
says by how much each type fell short.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from nuner_core.hashing import short_hash
from nuner_core.iob2.conll import Sentence, mentions

SAMPLER_VERSION = "1"  # bump when the same inputs would give different support sets
Method = Literal["k2k", "kw"]  # what k counts: entity mentions per type (k2k) or entity words per type (kw)
UNITS = {"k2k": "mentions", "kw": "words"}


@dataclass(frozen=True)
class SupportSet:
    k: int
    seed: int  # sampling index (0 .. seeds-1); the random stream also depends on the base seed and k
    indices: tuple[int, ...]  # pool sentence indices, in acceptance order
    counts: dict[str, int]  # per type, what k counts (mentions for k2k, words for kw) in the support set
    attempts: int  # sentences examined
    shortfall: dict[str, int]  # types below k -> count found (absent: the type reached k)
    method: str = "k2k"  # the sampling that drew it: k2k (mentions per type) or kw (words per type)

    @property
    def complete(self) -> bool:
        return not self.shortfall


Supports = dict[str, dict[tuple[int, int], SupportSet]]  # benchmark name -> (k, sampling) -> support set


def mention_counts(sentences: Sequence[Sentence]) -> list[Counter[str]]:
    """Entity mentions per type of every sentence."""
    return [Counter(t for _, _, t in mentions(s.tags)) for s in sentences]


def word_counts(sentences: Sequence[Sentence]) -> list[Counter[str]]:
    """Entity words per type of every sentence (B-X and I-X words both count for X)."""
    return [Counter(tag[2:] for tag in s.tags if tag != "O") for s in sentences]


def unit_counts(sentences: Sequence[Sentence], method: Method) -> list[Counter[str]]:
    """What the sampling method counts, per sentence."""
    if method == "k2k":
        return mention_counts(sentences)
    if method == "kw":
        return word_counts(sentences)
    raise ValueError(f"unknown sampling method {method!r} (expected k2k or kw)")


def greedy_k_2k(
    counts: Sequence[Counter[str]],
    types: Sequence[str],
    k: int,
    rng: np.random.Generator,
    max_attempts: int | None = None,
) -> tuple[list[int], Counter[str], int]:
    """Accepted sentence indices, the counts per type they hold, and the sentences examined.

    ``counts`` are per-sentence mentions (k~2k) or entity words (k_w~2k_w): the procedure is
    the same, only the unit differs (see the module docstring).
    """
    total: Counter[str] = Counter({t: 0 for t in types})
    accepted: list[int] = []
    order = rng.permutation(len(counts))
    if max_attempts is not None:
        order = order[:max_attempts]
    attempts = 0
    for index in order:
        if all(total[t] >= k for t in types):
            break
        attempts += 1
        mine = counts[index]
        if not any(total[t] < k for t in mine):
            continue  # adds nothing that is still needed (or has no entity at all)
        if any(total[t] + n > 2 * k for t, n in mine.items()):
            continue  # would push some type beyond 2k
        accepted.append(int(index))
        total.update(mine)
    return accepted, total, attempts


def sample_support(
    counts: Sequence[Counter[str]], types: Sequence[str], k: int, seed: int, base_seed: int = 0, max_attempts: int | None = None,
    method: Method = "k2k",
) -> SupportSet:
    """One support set; the same arguments always give the same set.

    ``counts`` must be what ``method`` counts (``unit_counts``). Both methods draw from the
    same random stream, so k2k's sets are those of earlier versions.
    """
    rng = np.random.default_rng([base_seed, k, seed])
    accepted, total, attempts = greedy_k_2k(counts, types, k, rng, max_attempts)
    shortfall = {t: total[t] for t in types if total[t] < k}
    return SupportSet(k, seed, tuple(accepted), {t: total[t] for t in types}, attempts, shortfall, method)


def support_sets(
    sentences: Sequence[Sentence],
    pool_fingerprint: str,
    types: Sequence[str],
    grid: Sequence[tuple[int, int]],
    base_seed: int = 0,
    max_attempts: int | None = None,
    cache_dir: Path | None = None,
    method: Method = "k2k",
) -> tuple[dict[tuple[int, int], SupportSet], int]:
    """Support sets for every ``(k, seed)`` of ``grid``, read from the cache when saved before.

    Returns the sets and how many came from the cache. Saved sets make every competitor
    (encoders and LLMs), in this run and later ones, see exactly the same training sentences.
    """
    counts: list[Counter[str]] | None = None
    found: dict[tuple[int, int], SupportSet] = {}
    hits = 0
    for k, seed in grid:
        path = _cache_path(cache_dir, pool_fingerprint, types, k, seed, base_seed, max_attempts, method) if cache_dir else None
        if path is not None and path.is_file():
            found[(k, seed)] = _load(path)
            hits += 1
            continue
        if counts is None:
            counts = unit_counts(sentences, method)
        support = sample_support(counts, types, k, seed, base_seed, max_attempts, method)
        found[(k, seed)] = support
        if path is not None:
            _save(path, support)
    return found, hits


def _cache_path(root: Path, pool: str, types: Sequence[str], k: int, seed: int, base_seed: int, cap: int | None,
                method: Method = "k2k") -> Path:
    parts: list[object] = [SAMPLER_VERSION, pool, list(types), base_seed, cap]
    if method != "k2k":  # k2k keeps the paths (and the saved sets) of earlier versions
        parts.append(method)
    key = short_hash(json.dumps(parts))
    return root / "support" / key / f"k{k}-s{seed}.json"


def _save(path: Path, support: SupportSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(asdict(support)))
    os.replace(part, path)


def _load(path: Path) -> SupportSet:
    raw = json.loads(path.read_text())
    return SupportSet(raw["k"], raw["seed"], tuple(raw["indices"]), raw["counts"], raw["attempts"], raw["shortfall"],
                      raw.get("method", "k2k"))
