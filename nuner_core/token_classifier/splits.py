"""What a token classifier is trained, selected and scored on: IOB2 sentences per split, and the entity types."""

from __future__ import annotations

from dataclasses import dataclass

from nuner_core.iob2.conll import Sentence


@dataclass
class LabelledSplits:
    train: list[Sentence]  # the weights are fitted on these
    dev: list[Sentence]  # early stopping and the selected weights (best entity F1); empty: all epochs, the last weights
    test: list[Sentence]  # scored once with the selected weights; empty: no test score
    types: list[str]  # entity types, in the model's label order

    @property
    def labels(self) -> list[str]:
        """IOB2 labels, ``O`` first, then ``B-``/``I-`` per type (the model's id order)."""
        return ["O"] + [f"{p}-{t}" for t in self.types for p in ("B", "I")]
