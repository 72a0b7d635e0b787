"""Bad input: counted, or a clear error naming the file, column or record."""

import polars as pl
import pytest
from dataset_helpers import run_dataset, write_responses

from nuner_core.dataset.build import check_accounting
from nuner_core.stage_api import StageError
from nuner_core.store import ArtifactRef


def test_empty_responses_file(tmp_path):
    path = write_responses(tmp_path / "responses.parquet", [])
    with pytest.raises(StageError, match=r"responses\.parquet has no rows"):
        run_dataset(tmp_path, path=str(path))


@pytest.mark.parametrize("content,message", [(b"", "not a readable Parquet file"), (None, "does not exist")])
def test_unreadable_responses_file(tmp_path, content, message):
    path = tmp_path / "responses.parquet"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StageError, match=message):
        run_dataset(tmp_path, path=str(path))


def test_non_string_column(tmp_path):
    path = tmp_path / "responses.parquet"
    pl.DataFrame({"id": ["a"], "text": ["Apple."], "response": [42]}).write_parquet(path)
    with pytest.raises(StageError, match="column 'response' has type int64, expected string"):
        run_dataset(tmp_path, path=str(path))


def test_missing_column(tmp_path):
    path = tmp_path / "responses.parquet"
    pl.DataFrame({"id": ["a"], "text": ["Apple."]}).write_parquet(path)
    with pytest.raises(StageError, match="no column 'response'"):
        run_dataset(tmp_path, path=str(path))


def test_null_response_null_text_and_no_entities_are_counted(tmp_path):
    path = write_responses(
        tmp_path / "responses.parquet",
        [
            {"id": "ok", "text": "Apple sells phones.", "response": "Apple <> company"},
            {"id": "failed", "text": "Something.", "response": None},
            {"id": "no-text", "text": None, "response": "Apple <> company\n\nx <> y"},
            {"id": "empty", "text": "Nothing here.", "response": "   \n"},
            {"id": "prose", "text": "Nothing here.", "response": "There are no entities in this sentence."},
            {"id": "missing", "text": "Nothing here.", "response": "Paris <> city"},
            {"id": None, "text": "Apple again.", "response": "Apple <> company"},
        ],
    )
    result, _ = run_dataset(tmp_path, path=str(path))
    c = result.extra["counts"]
    assert c["sentences.kept"] == 1
    assert c["sentences.dropped.failed_response"] == 1
    assert c["sentences.dropped.no_text"] == 1 and c["lines.dropped.no_text"] == 2
    assert c["sentences.dropped.no_entities"] == 2  # blank answer; prose only
    assert c["sentences.dropped.none_found"] == 1 and c["entities.absent"] == 1
    assert c["lines.dropped.no_separator"] == 1
    assert c["sentences.dropped.no_id"] == 1 and c["lines.dropped.no_id"] == 1
    assert c["answers"] == 7 and check_accounting(c) == []


def test_responses_need_an_annotate_artifact(tmp_path):
    with pytest.raises(StageError, match="needs the annotate stage's artifact"):
        run_dataset(tmp_path)


def test_reads_the_annotate_artifact(tmp_path):
    annotate_dir = tmp_path / "annotate-artifact"
    annotate_dir.mkdir()
    write_responses(annotate_dir / "responses.parquet", [{"id": "a", "text": "Apple.", "response": "Apple <> company"}])
    result, _ = run_dataset(tmp_path, inputs={"annotate": ArtifactRef("annotate", "k", str(annotate_dir))})
    assert result.rows["sentences"] == 1 and result.extra["source"]["path"].endswith("responses.parquet")


def test_everything_dropped_is_an_error(tmp_path):
    path = write_responses(tmp_path / "responses.parquet", [{"id": "a", "text": "Idea.", "response": "Idea <> concept"}])
    with pytest.raises(StageError, match=r"no sentence is left to train on.*concept_filter"):
        run_dataset(tmp_path, path=str(path))


def test_a_failed_call_is_never_read_as_no_entity_whatever_its_response(tmp_path):
    """A row with its error set failed, even if a writer left an empty or partial answer in it (issue 11, item 3)."""
    path = write_responses(
        tmp_path / "responses.parquet",
        [
            {"id": "ok", "text": "Apple sells phones.", "response": "Apple <> company"},
            {"id": "cut", "text": "Apple sells phones.", "response": "", "error": "truncated: after 3 answer(s)"},
            {"id": "half", "text": "Rome is old.", "response": "Rome <> ci", "error": "truncated: after 3 answer(s)"},
            {"id": "null", "text": "Rome is old.", "response": None, "error": "server_error: gave up after 8 attempts"},
            {"id": "none", "text": "Nothing here.", "response": ""},  # a real answer: no entity
        ],
    )
    result, _ = run_dataset(tmp_path, path=str(path))
    c = result.extra["counts"]
    assert c["sentences.dropped.failed_response"] == 3
    assert (c["failed_response.truncated"], c["failed_response.server_error"]) == (2, 1)
    assert c["sentences.dropped.no_entities"] == 1 and c["sentences.kept"] == 1
    assert check_accounting(c) == []


def test_a_one_megabyte_entity_is_a_counted_drop_not_a_traceback(tmp_path):
    """Aligning it was quadratic (200 kB: 79 s) and at 1 MB polars failed with a ComputeError."""
    import time

    from nuner_core.dataset.parse import MAX_ENTITY_CHARS

    huge = "a" * 1_000_000
    path = write_responses(tmp_path / "responses.parquet", [
        {"id": "long", "text": f"Apple sells {huge} phones.", "response": f"{huge} <> thing\nApple <> company"},
        {"id": "ok", "text": "Paris is big.", "response": "Paris <> city"},
    ])  # fmt: skip
    started = time.perf_counter()
    result, out = run_dataset(tmp_path, path=str(path))
    assert time.perf_counter() - started < 30
    c = result.extra["counts"]
    assert c["lines.dropped.entity_too_long"] == 1 and c["sentences.kept"] == 2 and check_accounting(c) == []
    assert result.dropped["lines: entity_too_long"] == 1
    rejected = pl.read_parquet(out / "rejected_lines.parquet")
    assert rejected.filter(pl.col("reason") == "entity_too_long")["id"].to_list() == ["long"]
    assert MAX_ENTITY_CHARS < 1_000_000


def test_an_entity_repeated_a_hundred_thousand_times_in_its_sentence_is_capped_and_counted(tmp_path):
    """Each occurrence cost a pass of the search (10^5 of them: minutes) and a span."""
    import time

    from nuner_core.dataset.align import MAX_MATCHES_PER_LINE

    path = write_responses(tmp_path / "responses.parquet", [
        {"id": "rep", "text": " ".join(["ab"] * 100_000), "response": "ab <> thing"},
        {"id": "ok", "text": "Paris is big.", "response": "Paris <> city"},
    ])  # fmt: skip
    started = time.perf_counter()
    result, _ = run_dataset(tmp_path, path=str(path))
    assert time.perf_counter() - started < 10
    c = result.extra["counts"]
    assert c["entities.occurrences_capped"] == 1 and c["mentions.aligned"] == MAX_MATCHES_PER_LINE + 1
    assert c["sentences.kept"] == 2 and check_accounting(c) == []


def test_ordinary_data_has_no_new_counts(tmp_path):
    """The caps change nothing for ordinary answers: no new keys in the stats (the stage's key is unchanged)."""
    path = write_responses(tmp_path / "responses.parquet", [{"id": "ok", "text": "Paris is big.", "response": "Paris <> city"}])
    result, _ = run_dataset(tmp_path, path=str(path))
    assert not {"lines.dropped.entity_too_long", "entities.occurrences_capped"} & set(result.extra["counts"])
