"""Dataset stage config: where the annotations come from, how they are aligned and filtered."""

from typing import Literal

from pydantic import Field, model_validator

from nuner_core.basemodel import Float, Int, StrictModel, run_only


class DatasetConfig(StrictModel):
    # responses: the annotate artifact's responses.parquet (or `path` to such a file);
    # nuner_csv: the released NuNER CSV (`input`, `output`); pile_ner: UniversalNER's Pile-NER JSON.
    source: Literal["responses", "nuner_csv", "pile_ner"] = "responses"
    path: str | None = None  # file to read; required for imports; ${assets} and $ENV are expanded
    case_insensitive_fallback: bool = False  # entities with no exact match are searched ignoring case (counted apart)
    drop_concepts: tuple[str, ...] = ("concept",)  # drop every sentence with an annotation of one of these concepts (paper §3.2)
    top_concepts: Int | None = Field(default=None, ge=1)  # keep only the n most frequent concepts' spans (paper §5.2)
    num_sentences: Int | None = Field(default=None, ge=1)  # subsample this many sentences after filtering (paper §5.3)
    keep_empty: bool = False  # keep sentences left without any span (negatives only)
    validation_fraction: Float = Field(default=0.1, ge=0.0, lt=1.0)  # share of sentences in the validation split
    seed: Int = 0  # seed of the hashed split and subsample: same seed and ids, same assignment
    batch_size: Int = run_only(100_000, ge=1)  # sentences per processing batch
    top_table_rows: Int = run_only(30, ge=1)  # rows of the top-concepts table report

    @model_validator(mode="after")
    def _import_needs_path(self) -> "DatasetConfig":
        if self.source != "responses" and not self.path:
            raise ValueError(f"dataset.source={self.source} imports a file: set dataset.path to it")
        return self
