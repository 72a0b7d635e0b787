"""Planning: keys propagate downstream, subsets take their inputs from the store."""

import pytest

from nuner_core.basemodel import StrictModel, added
from nuner_core.config import load_config
from nuner_core.pipeline import MissingInput, key_config, plan, run_stage
from nuner_core.registry import STAGE_NAMES
from nuner_core.store import open_store


def _keys(overrides=None, store=None, stages=None):
    config = load_config("demo", overrides)
    return {p.stage: p.key for p in plan(config, stages, store or open_store())}


FULL_RUN = ["corpus", "annotate", "dataset", "pretrain", "evaluate"]  # the demo's targets (evaluate) and what it reads


def test_a_full_plan_is_the_targets_and_what_they_read_in_order(data_dir, tmp_path):
    assert list(_keys()) == FULL_RUN
    (tmp_path / "docs.txt").write_text("Paris.\n")
    configured = {"tag.labels": ["city"], "tag.inputs": [str(tmp_path / "docs.txt")],
                  "finetune.data": {"kind": "benchmark", "name": "mit_restaurant"}}
    assert list(_keys(configured)) == [s for s in STAGE_NAMES]  # finetune and tag join when configured


def test_changing_one_stage_changes_it_and_its_successors_only(data_dir):
    before = _keys()
    after = _keys({"dataset.seed": 1})
    position = FULL_RUN.index("dataset")
    for i, stage in enumerate(FULL_RUN):
        assert (before[stage] != after[stage]) == (i >= position), stage


def test_fields_outside_the_key_change_nothing(data_dir):
    assert _keys({"corpus.batch_size": 17}) == _keys()


def test_subset_without_inputs_is_a_clear_error(data_dir):
    with pytest.raises(MissingInput, match="run the 'corpus' stage first"):
        plan(load_config("demo"), ["annotate"], open_store())


def test_subset_takes_inputs_from_the_store(data_dir):
    store = open_store()
    config = load_config("demo", {"corpus.num_sentences": 20})
    (corpus_step,) = plan(config, ["corpus"], store)
    ref = run_stage(corpus_step, {}, store)
    (annotate_step,) = plan(config, ["annotate"], store)
    assert annotate_step.inputs["corpus"] == ref
    # With another config the expected corpus artifact does not exist: the latest one is used.
    (fallback,) = plan(load_config("demo", {"corpus.seed": 9}), ["annotate"], store)
    assert fallback.inputs["corpus"] == ref


def test_importing_a_corpus_needs_no_llm_stage(data_dir, tmp_path):
    released = tmp_path / "nuner.csv"
    released.write_text('input,output\n"Paris is big.","[\'Paris <> city\']"\n')
    keys = _keys({"dataset.source": "nuner_csv", "dataset.path": str(released)})
    assert "corpus" not in keys and "annotate" not in keys and "dataset" in keys
    assert keys["dataset"] == _keys({"dataset.source": "nuner_csv", "dataset.path": str(released)}, stages=["dataset"])["dataset"]


def test_evaluating_configured_encoders_only_needs_no_pretraining(data_dir):
    keys = _keys({"evaluate.use_pretrain": False})
    assert list(keys) == ["evaluate"]


# The demo profile's keys: corpus, annotate and dataset as before the stage registry (issue 10);
# pretrain and evaluate moved on purpose (pretrain CODE_VERSION 2, new evaluate protocols). A change here
# means every user's artifact store is rebuilt from scratch: bump a stage's CODE_VERSION on
# purpose, never by accident. (The keys hash the shared assets' contents and MiniLM's files.)
DEMO_KEYS = {
    "corpus": "ca99d6d40449849c",
    "annotate": "fbf02e3c38f84945",
    "dataset": "d01d199a30a8a2a2",
    "pretrain": "caafc2b7e794c6ca",  # CODE_VERSION 2 (issue 12): each run directory is a zero-shot model
    "evaluate": "341e17653643e553",  # issue 21: evaluate.zero_shot.decoding spans, the measured better default
}
EVALUATE_WORDS_KEY = "935bf9d190468305"  # issue 15's key: evaluate.zero_shot.decoding words (its legacy value) keeps it


def test_demo_profile_keys_are_pinned(data_dir):
    assert _keys() == DEMO_KEYS


def test_each_fingerprint_is_computed_once_per_plan(data_dir, monkeypatch):
    from nuner_core.stage_api import StageSpec

    calls: list[str] = []
    real = StageSpec.fingerprint

    def counting(self, config):
        calls.append(self.name)
        return real(self, config)

    monkeypatch.setattr(StageSpec, "fingerprint", counting)
    _keys()
    assert sorted(calls) == sorted(FULL_RUN)
    calls.clear()
    _keys(stages=["evaluate"], store=open_store())  # inputs resolved from the (empty) store
    assert sorted(calls) == sorted(FULL_RUN)


def test_a_stage_module_that_breaks_the_contract_fails_at_registration():
    import types

    from nuner_core.basemodel import StrictModel
    from nuner_core.stage_api import StageSpec

    class Empty(StrictModel):
        pass

    good = types.ModuleType("good")
    good.CODE_VERSION = "1"
    good.run = lambda ctx: None
    StageSpec("good", good, Empty)
    no_version = types.ModuleType("no_version")
    no_version.run = good.run
    with pytest.raises(TypeError, match="CODE_VERSION"):
        StageSpec("no_version", no_version, Empty)
    misshapen = types.ModuleType("misshapen")
    misshapen.CODE_VERSION, misshapen.run = "1", good.run
    misshapen.describe = lambda config: "one argument short"
    with pytest.raises(TypeError, match="describe must take 2"):
        StageSpec("misshapen", misshapen, Empty)


class _Before(StrictModel):
    lr: float = 0.1


class _After(StrictModel):
    lr: float = 0.1
    decoding: str = added("spans", legacy="words")  # default is not the legacy value
    backends: tuple[str, ...] = added(("torch",), legacy=("torch",))


class _Outer(StrictModel):
    inner: _After = _After()


def test_an_added_field_is_out_of_the_key_exactly_at_its_legacy_value():
    before = key_config(_Before())
    assert key_config(_After(decoding="words")) == before  # the old behaviour: the old key
    assert key_config(_After(decoding="spans")) == {**before, "decoding": "spans"}  # the default here differs from legacy
    assert key_config(_After(decoding="words", backends=["torch", "onnx"])) == {**before, "backends": ["torch", "onnx"]}
    assert key_config(_Outer(inner=_After(decoding="words"))) == {"inner": before}  # at any depth
    assert key_config(_Outer(inner=_After(decoding="spans"))) != {"inner": before}


def test_an_added_field_at_its_legacy_value_keeps_the_stage_key(data_dir):
    legacy = {"evaluate.zero_shot.decoding": "words", "evaluate.zero_shot.backends": ["torch"]}
    assert _keys(legacy) == DEMO_KEYS | {"evaluate": EVALUATE_WORDS_KEY}  # the keys from before the fields existed
    assert _keys({"evaluate.zero_shot.backends": ["torch", "onnx"]})["evaluate"] != _keys(legacy)["evaluate"]
    assert _keys({"evaluate.zero_shot.decoding": "spans"})["evaluate"] == DEMO_KEYS["evaluate"]  # the default: a new key
    tag = load_config("demo").tag
    assert "decoding" not in key_config(tag.model_copy(update={"decoding": "words"}))  # the tag stage's too
    assert key_config(tag.model_copy(update={"decoding": "spans"}))["decoding"] == "spans"
