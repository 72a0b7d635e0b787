"""Corpus stage config: where the text comes from and which sentences are kept."""

from typing import Literal

from pydantic import Field

from nuner_core.basemodel import Float, Int, StrictModel, run_only


class CorpusSource(StrictModel):
    kind: Literal["hub", "files"] = "files"  # a Hugging Face hub data set (streamed) or local files
    path: str  # hub id (allenai/c4) or a file / glob; ${assets} and $ENV are expanded
    name: str | None = None  # hub config name (c4: "en")
    split: str = "train"  # hub split
    format: Literal["json", "parquet"] | None = None  # local files: inferred from the extension when None
    text_field: str = "text"  # the record field that holds the text
    presplit: bool = False  # records are already sentences: no splitting
    max_documents: Int | None = Field(default=None, ge=1)  # read at most this many records (a hub stream is endless)


class CorpusConfig(StrictModel):
    # where the text comes from (hub data sets, local files); the default: the demo assets' sentences
    sources: tuple[CorpusSource, ...] = (CorpusSource(path="${assets}/annotations.jsonl", presplit=True),)
    language: str = "en"  # sentence splitter language (sentencex)
    num_sentences: Int | None = Field(default=None, ge=1)  # sample this many sentences; None keeps all
    seed: Int = 0  # sampling seed: same seed and source, same sample
    min_words: Int = Field(default=6, ge=1)  # shorter sentences are dropped
    max_words: Int = Field(default=60, ge=1)  # longer sentences are dropped
    max_token_chars: Int = Field(default=40, ge=1)  # a whitespace token longer than this marks junk (URLs, base64)
    min_letter_ratio: Float = Field(default=0.6, ge=0, le=1)  # share of letters among non-space characters
    batch_size: Int = run_only(1000, ge=1)  # records per read batch
