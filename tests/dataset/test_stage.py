"""The whole stage: the real shared annotations, filters, outputs, and the framework contract."""

import json

import polars as pl
import pyarrow.parquet as pq
import pytest
from dataset_helpers import run_dataset, shared_annotations, write_responses

from nuner_core.config import load_config
from nuner_core.dataset import stage
from nuner_core.dataset.build import ANNOTATED_SCHEMA, CONCEPTS_SCHEMA, check_accounting
from nuner_core.pipeline import PlannedStage, key_config, run_stage
from nuner_core.store import artifact_key, open_store


def test_demo_accounts_for_every_line(tmp_path, demo_responses):
    """The 1,662 recorded answers: all 6,208 entity lines parsed or dropped, found or not found."""
    result, out = run_dataset(tmp_path, path=str(demo_responses))
    c = result.extra["counts"]
    raw = [json.loads(line) for line in shared_annotations().open(encoding="utf-8")]
    assert c["answers"] == len(raw) == 1662
    assert c["lines"] == sum(1 for r in raw for ln in (r["response"] or "").split("\n") if ln.strip()) == 6208
    assert c["lines"] == c["lines.parsed"] + sum(v for k, v in c.items() if k.startswith("lines.dropped."))
    assert c["lines.parsed"] == c["entities.exact"] + c["entities.casefold"] + c["entities.inside_word"] + c["entities.absent"]
    assert c["answers"] == c["sentences.kept"] + sum(v for k, v in c.items() if k.startswith("sentences.dropped."))
    assert check_accounting(c) == []
    assert c["concepts.parsed"] == 2023
    # what this data holds: every line well-formed; 7 entities glued to the next word ("2019LIFETIME")
    assert c["lines.parsed"] == 6208 and c["entities.exact"] == 6201 and c["entities.inside_word"] == 7
    assert c["sentences.dropped.no_entities"] == 23 and c["sentences.kept"] == 1639
    assert c["sentences.train"] + c["sentences.validation"] == 1639
    assert 0.05 < c["sentences.validation"] / 1639 < 0.15
    # outputs have exactly the DESIGN.md schemas and consistent contents
    annotated = pq.read_table(out / "annotated.parquet")
    assert [(f.name, str(f.type)) for f in annotated.schema] == [
        ("id", "string"),
        ("text", "string"),
        ("split", "string"),
        ("spans", "list<element: struct<start: int32, end: int32, concept: string>>"),
    ]  # pyarrow names a Parquet list's items "element"
    assert annotated.schema.field("spans").type.value_type == ANNOTATED_SCHEMA.field("spans").type.value_type
    assert pq.read_schema(out / "concepts.parquet").equals(CONCEPTS_SCHEMA, check_metadata=False)
    rows = annotated.to_pylist()
    assert len(rows) == 1639 and sum(len(r["spans"]) for r in rows) == c["mentions.kept"]
    entities = pl.read_parquet(out / "entities.parquet")
    by_sentence = {}
    for e in entities.filter(pl.col("match") == "exact").iter_rows(named=True):
        by_sentence.setdefault(e["id"], set()).add((e["entity"], e["concept"]))
    for r in rows:
        for span in r["spans"]:
            assert span["start"] < span["end"]
            assert (r["text"][span["start"] : span["end"]], span["concept"]) in by_sentence[r["id"]]
    concepts = pl.read_parquet(out / "concepts.parquet")
    assert concepts.height == c["concepts"] and concepts["mentions"].sum() == c["mentions.kept"]
    assert concepts["mentions"].is_sorted(descending=True)
    assert entities["description"].null_count() == 0  # every recorded line has a description, kept on the side
    assert (out / stage.PLOT_FILE).read_bytes()[:4] == b"\x89PNG"
    kinds = {r.key: r for r in result.reports}
    assert kinds["dataset-concept-frequency"].content == stage.PLOT_FILE
    assert len(kinds["dataset-top-concepts"].content) == 30
    assert kinds["dataset-top-concepts"].content[0]["concept"] == concepts["concept"][0]


def test_nested_spans_reach_the_output(tmp_path):
    text = "Agents of the FBI's Counterterrorism Division met."
    path = write_responses(
        tmp_path / "r.parquet",
        [{"id": "a", "text": text, "response": "FBI's Counterterrorism Division <> agency division\nFBI <> agency"}],
    )
    _, out = run_dataset(tmp_path, path=str(path), validation_fraction=0.0)
    spans = pq.read_table(out / "annotated.parquet").to_pylist()[0]["spans"]
    assert spans == [
        {"start": 14, "end": 17, "concept": "agency"},
        {"start": 14, "end": 45, "concept": "agency division"},
    ]


def _responses(tmp_path):
    rows = [
        {"id": "a", "text": "Apple sells phones in Paris.", "response": "Apple <> company\nParis <> city"},
        {"id": "b", "text": "Rome is old.", "response": "Rome <> city"},
        {"id": "c", "text": "The idea of freedom.", "response": "freedom <> concept\nidea <> thought"},
        {"id": "d", "text": "Nothing to see.", "response": ""},
        {"id": "e", "text": "It failed.", "response": None},
        {"id": "f", "text": "Berlin and Madrid.", "response": "Berlin <> city\nMadrid <> capital\nLondon <> city"},
        {"id": "g", "text": "Google searches.", "response": "Google <> company"},
        {"id": "h", "text": "  ", "response": "x <> y"},
        {"id": "a", "text": "A duplicate id.", "response": "duplicate <> thing"},
    ]
    return write_responses(tmp_path / "responses.parquet", rows)


def test_filters_and_drop_reasons(tmp_path):
    path = _responses(tmp_path)
    result, out = run_dataset(tmp_path, path=str(path))
    c = result.extra["counts"]
    assert {k[len("sentences.dropped.") :]: v for k, v in c.items() if k.startswith("sentences.dropped.") and v} == {
        "concept_filter": 1,  # c: "freedom <> concept", the paper's filter
        "no_entities": 1,  # d: empty answer
        "failed_response": 1,  # e: null response
        "no_text": 1,  # h: blank text
        "duplicate_id": 1,  # the second "a"
    }
    assert c["sentences.kept"] == 4 and c["entities.absent"] == 1  # "London" is not in f
    assert c["lines.dropped.no_text"] == 1
    assert result.dropped["sentences: failed_response"] == 1  # shown in the UI summary
    assert result.extra["examples"]["sentences.dropped.failed_response"] == ["id e: HTTP 500"]
    assert c["failed_response.HTTP 500"] == 1  # failures by the annotate stage's reason
    ids = pl.read_parquet(out / "annotated.parquet")["id"].to_list()
    assert ids == ["a", "b", "f", "g"]

    # keep only the most frequent concept (paper §5.2): "city" (Paris, Rome, Berlin)
    result, out = run_dataset(tmp_path, path=str(path), top_concepts=1)
    c = result.extra["counts"]
    assert pl.read_parquet(out / "concepts.parquet")["concept"].to_list() == ["city"]
    assert c["sentences.dropped.rare_concepts_only"] == 1  # g: only "company"
    assert c["mentions.dropped.rare_concept"] == 2  # Apple (a), Madrid (f)
    assert check_accounting(c) == []

    # no concept filter, keep sentences without spans
    result, out = run_dataset(tmp_path, path=str(path), drop_concepts=[], keep_empty=True)
    assert result.extra["counts"]["sentences.kept"] == 6
    assert "c" in pl.read_parquet(out / "annotated.parquet")["id"].to_list()

    # subsample (paper §5.3): nested, counted
    small, _ = run_dataset(tmp_path, path=str(path), num_sentences=2)
    assert small.extra["counts"]["sentences.kept"] == 2
    assert small.extra["counts"]["sentences.dropped.subsampled_out"] == 2


def test_case_insensitive_fallback_is_counted_apart(tmp_path):
    path = write_responses(
        tmp_path / "r.parquet", [{"id": "a", "text": "apple and pear.", "response": "Apple <> fruit\npear <> fruit"}]
    )
    result, _ = run_dataset(tmp_path, path=str(path))
    assert result.extra["counts"]["entities.absent"] == 1
    result, out = run_dataset(tmp_path, path=str(path), case_insensitive_fallback=True)
    c = result.extra["counts"]
    assert c["entities.casefold"] == 1 and c["entities.exact"] == 1 and c["mentions.casefold"] == 1
    assert pl.read_parquet(out / "entities.parquet")["match"].to_list() == ["casefold", "exact"]


def test_run_through_the_artifact_store(tmp_path, demo_responses):
    """run_stage publishes atomically with a manifest holding every count and the reports."""
    config = load_config("demo", [f"dataset.path={demo_responses}"])
    store = open_store(tmp_path / "store")
    key = artifact_key("dataset", stage.CODE_VERSION, {"config": key_config(config.dataset)}, {})
    step = PlannedStage("dataset", key, config)
    ref = run_stage(step, {}, store)
    manifest = ref.manifest()
    assert manifest["rows"]["sentences"] == 1639
    assert manifest["headline"]["entity_lines"] == 6208
    assert manifest["counts"]["lines.parsed"] == 6208
    assert "concept_frequency.png" in manifest["files"] and "annotated.parquet" in manifest["files"]
    assert {r["kind"] for r in manifest["reports"]} == {"image", "table", "markdown"}
    assert run_stage(step, {}, store).path == ref.path  # same key: reused, not rebuilt


def test_fingerprint_follows_file_content(tmp_path):
    from nuner_core.dataset.config import DatasetConfig

    path = _responses(tmp_path)
    cfg = DatasetConfig(path=str(path))
    before = stage.fingerprint(cfg)
    write_responses(path, [{"id": "z", "text": "Zed.", "response": "Zed <> letter"}])
    assert stage.fingerprint(cfg) != before
    assert stage.fingerprint(DatasetConfig()) is None  # the annotate artifact's key covers it


def test_profiles_have_a_dataset_section():
    for profile in ("demo", "paper"):
        cfg = load_config(profile).dataset
        assert cfg.source == "responses" and cfg.drop_concepts == ("concept",) and cfg.validation_fraction == 0.1
    with pytest.raises(ValueError, match="dataset.path"):
        load_config("demo", ["dataset.source=nuner_csv"])


@pytest.mark.parametrize("options", [{}, {"top_concepts": 40, "num_sentences": 900, "case_insensitive_fallback": True}])
def test_batch_size_does_not_change_the_outputs(tmp_path, demo_responses, options):
    """The stage spills each batch and writes annotated.parquet batch by batch: small batches (many, some
    with no kept row) give the same files, counts and spill-free output directory as one batch."""
    whole, whole_out = run_dataset(tmp_path, path=str(demo_responses), **options)
    small, small_out = run_dataset(tmp_path, path=str(demo_responses), batch_size=7, **options)
    assert list(small.extra["counts"].items()) == list(whole.extra["counts"].items())
    for name in ("annotated.parquet", "concepts.parquet", "entities.parquet", "rejected_lines.parquet"):
        assert pq.read_table(small_out / name).equals(pq.read_table(whole_out / name)), name
    assert sorted(p.name for p in small_out.iterdir()) == sorted(p.name for p in whole_out.iterdir())
    assert not [p for p in small_out.iterdir() if p.name.startswith(".")]  # the spill is gone


def test_small_batches_keep_the_filters(tmp_path):
    """Duplicates across batches, the top-concept cut and batches with nothing kept, one sentence a batch."""
    path = _responses(tmp_path)
    for options in ({}, {"top_concepts": 1}, {"drop_concepts": [], "keep_empty": True}, {"num_sentences": 2}):
        whole, whole_out = run_dataset(tmp_path, path=str(path), **options)
        small, small_out = run_dataset(tmp_path, path=str(path), batch_size=1, **options)
        assert small.extra["counts"] == whole.extra["counts"], options
        for name in ("annotated.parquet", "concepts.parquet"):
            assert pq.read_table(small_out / name).equals(pq.read_table(whole_out / name)), (options, name)
