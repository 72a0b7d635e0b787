"""The zero-shot tagger as a spaCy pipeline component (the optional extra ``[spacy]``).

    import spacy
    nlp = spacy.blank("en")
    nlp.add_pipe("nuner_zero_shot", config={"model": "my-tagger", "labels": ["person", "city"], "threshold": None})
    doc = nlp("Marie Curie moved to Paris")  # doc.ents: (Marie Curie, person), (Paris, city)

``thresholds`` ({label: p}, labels matched as the tagger matches them) overrides the threshold
for those labels, as ``nuner tag --threshold person=0.1``.

spaCy finds the factory through the entry point ``spacy_factories`` in pyproject.toml, so
``add_pipe`` works without importing this module; ``nlp.pipe`` tags ``batch_size`` texts
per tagger call. The config holds the model's path, not its weights: ``nlp.to_disk`` /
``spacy.load`` rebuild the component from that path.

The tagger reads its own words (``nuner_core.text.words``), spaCy its own tokens, so an
entity's character span is aligned to tokens with ``Doc.char_span(alignment_mode=...)``:
``expand`` (default) widens it to the tokens it touches (``paris`` in the token
``www.paris.com`` becomes that token), ``contract`` keeps the tokens wholly inside, ``strict``
only exact token boundaries. An entity that gets no tokens, or whose tokens overlap an
entity already in ``doc.ents`` (one set earlier in the pipeline, or an earlier entity of the
same text expanded onto the same token), is not set: it is counted in ``counts`` and logged,
never dropped silently. ``overwrite_ents`` replaces earlier entities instead of keeping them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Iterable, Iterator, Literal, Mapping, Sequence

from spacy.language import Language
from spacy.tokens import Doc, Span

from nuner_core.tagging import Entity, ZeroShotTagger, check_threshold
from nuner_core.tagging.labels import label_thresholds

logger = logging.getLogger(__name__)

AlignmentMode = Literal["expand", "contract", "strict"]
ALIGNMENT_MODES: tuple[AlignmentMode, ...] = ("expand", "contract", "strict")


@dataclass
class AlignmentCounts:
    """What became of the tagger's entities (over the component's lifetime)."""

    entities: int = 0  # found by the tagger
    set: int = 0  # set in doc.ents
    adjusted: int = 0  # of those, spans moved to token boundaries (alignment_mode expand or contract)
    unaligned: int = 0  # no token span in the alignment mode
    overlapping: int = 0  # tokens already taken by another entity

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ZeroShotEntities:
    """Sets ``doc.ents`` from the zero-shot tagger's entities (see the module docstring)."""

    def __init__(self, tagger: ZeroShotTagger, labels: Sequence[str], *, threshold: float | None = None,
                 thresholds: Mapping[str, float] | None = None, alignment_mode: str = "expand", overwrite_ents: bool = False,
                 batch_size: int = 64, name: str = "nuner_zero_shot") -> None:  # fmt: skip
        if not labels:
            raise ValueError(f"{name}: give at least one label")
        if alignment_mode not in ALIGNMENT_MODES:
            raise ValueError(f"{name}: alignment_mode must be one of {', '.join(ALIGNMENT_MODES)}, not {alignment_mode!r}")
        if batch_size < 1:
            raise ValueError(f"{name}: batch_size must be at least 1, not {batch_size}")
        self.tagger = tagger
        self.labels = list(labels)
        self.threshold = None if threshold is None else check_threshold(threshold)
        self.thresholds = dict(thresholds or {})  # label -> threshold, names matched as the tagger matches them
        label_thresholds(self.labels, 0.0, self.thresholds)  # a bad value or a label not among labels fails here, not on the first doc
        self.alignment_mode: AlignmentMode = alignment_mode  # narrowed by the check above
        self.overwrite_ents = overwrite_ents
        self.batch_size = batch_size
        self.name = name
        self.counts = AlignmentCounts()

    def __call__(self, doc: Doc) -> Doc:
        return self._tag([doc])[0]

    def pipe(self, stream: Iterable[Doc], batch_size: int | None = None) -> Iterator[Doc]:
        """Tags ``batch_size`` docs per tagger call (``nlp.pipe`` passes its own ``batch_size``)."""
        docs = iter(stream)
        while batch := list(islice(docs, batch_size or self.batch_size)):
            yield from self._tag(batch)

    def _tag(self, docs: list[Doc]) -> list[Doc]:
        found = self.tagger.predict([doc.text for doc in docs], self.labels, self.threshold, thresholds=self.thresholds or None)
        for doc, entities in zip(docs, found):
            self._set(doc, entities)
        return docs

    def _set(self, doc: Doc, entities: list[Entity]) -> None:
        kept: list[Span] = [] if self.overwrite_ents else list(doc.ents)
        taken = {i for span in kept for i in range(span.start, span.end)}
        self.counts.entities += len(entities)
        for entity in entities:  # in text order: where two expand onto the same token, the first stays
            span = doc.char_span(entity.start, entity.end, label=entity.label, alignment_mode=self.alignment_mode)
            if span is None or len(span) == 0:
                self._not_set(entity, "unaligned", f"no tokens in alignment mode {self.alignment_mode!r}")
                continue
            tokens = range(span.start, span.end)
            if taken.intersection(tokens):
                self._not_set(entity, "overlapping", f"its tokens {span.text!r} overlap another entity")
                continue
            taken.update(tokens)
            kept.append(span)
            self.counts.set += 1
            self.counts.adjusted += (span.start_char, span.end_char) != (entity.start, entity.end)
        doc.ents = sorted(kept, key=lambda span: span.start)

    def _not_set(self, entity: Entity, reason: Literal["unaligned", "overlapping"], why: str) -> None:
        setattr(self.counts, reason, getattr(self.counts, reason) + 1)
        if self.counts.unaligned + self.counts.overlapping == 1:  # once, then per entity at debug level
            logger.warning("%s: some entities are not set in doc.ents (counted in the component's .counts); first: %r %s", self.name, entity.text, why)
        logger.debug("%s: %r (%s, %d-%d) not set: %s", self.name, entity.text, entity.label, entity.start, entity.end, why)


@Language.factory(
    "nuner_zero_shot",
    default_config={"threshold": None, "thresholds": {}, "alignment_mode": "expand", "overwrite_ents": False, "device": "auto",
                    "batch_size": 64},
)
def make_component(nlp: Language, name: str, model: str, labels: list[str], threshold: float | None, thresholds: dict[str, float],
                   alignment_mode: str, overwrite_ents: bool, device: str, batch_size: int) -> ZeroShotEntities:  # fmt: skip
    """The factory spaCy calls for ``nlp.add_pipe("nuner_zero_shot", config={"model": ..., "labels": [...]})``."""
    tagger = ZeroShotTagger.from_pretrained(model, device=device)
    return ZeroShotEntities(tagger, labels, threshold=threshold, thresholds=thresholds, alignment_mode=alignment_mode,
                            overwrite_ents=overwrite_ents, batch_size=batch_size, name=name)  # fmt: skip

