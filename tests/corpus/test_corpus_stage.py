import gzip
import json

import polars as pl
import pytest

from nuner_core.corpus.config import CorpusConfig, CorpusSource
from nuner_core.corpus.sources import CorpusInputError
from nuner_core.corpus.stage import build_sentences

GOOD = "The quick brown fox jumps over the lazy dog. A second sentence has enough words too."


def _write_jsonl(path, records, gz=False):
    lines = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(lines)
    else:
        path.write_text(lines, encoding="utf-8")
    return path


def _run(tmp_path, *sources, **kw):
    config = CorpusConfig(sources=tuple(sources), **kw)
    out = tmp_path / "sentences.parquet"
    counts, kept = build_sentences(config, out)
    return counts, pl.read_parquet(out)


def test_jsonl_gz_parquet_and_globs(tmp_path):
    _write_jsonl(tmp_path / "a.jsonl", [{"text": GOOD, "id": "doc-a"}])
    _write_jsonl(tmp_path / "b.jsonl.gz", [{"text": "Gzipped files are read just like the plain ones are."}], gz=True)
    pl.DataFrame({"body": ["Parquet files work with a configurable text field name."]}).write_parquet(tmp_path / "c.parquet")
    counts, table = _run(
        tmp_path,
        CorpusSource(path=str(tmp_path / "*.jsonl*")),
        CorpusSource(path=str(tmp_path / "c.parquet"), text_field="body"),
    )
    assert counts.documents == 3 and len(table) == 4
    assert table.columns == ["id", "text", "doc_id", "source"]
    assert table["doc_id"][0] == "doc-a"
    assert table["doc_id"][2] == "b.jsonl.gz:1"  # no id field: file name and line


def test_presplit_records_are_not_split(tmp_path):
    _write_jsonl(tmp_path / "s.jsonl", [{"text": GOOD}])
    _, table = _run(tmp_path, CorpusSource(path=str(tmp_path / "s.jsonl"), presplit=True))
    assert table["text"].to_list() == [GOOD]


def test_missing_text_and_non_string_are_counted(tmp_path):
    _write_jsonl(tmp_path / "a.jsonl", [{"text": GOOD}, {"title": "no text here"}, {"text": None}])
    counts, table = _run(tmp_path, CorpusSource(path=str(tmp_path / "a.jsonl")))
    assert counts.dropped["missing_text"] == 2 and len(table) == 2


def test_same_seed_same_sample(tmp_path):
    docs = [{"text": f"This is generated sentence number {i} of the test corpus."} for i in range(300)]
    _write_jsonl(tmp_path / "a.jsonl", docs)
    source = CorpusSource(path=str(tmp_path / "a.jsonl"))
    _, one = _run(tmp_path, source, num_sentences=40, seed=3)
    _, two = _run(tmp_path, source, num_sentences=40, seed=3)
    _, other = _run(tmp_path, source, num_sentences=40, seed=4)
    assert one["id"].to_list() == two["id"].to_list() and one["id"].to_list() != other["id"].to_list()
    assert len(one) == 40


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"text": "fine line with enough words in it."}\n{"text": "bad \xff\xfe byte"}\n', ":2: not UTF-8 text"),
        (b'{"text": "fine line with enough words in it."}\n["a", "list"]\n', ":2: expected a JSON object, got a JSON list"),
        (b'{"text": "fine line with enough words in it."}\n{"text": oops}\n', ":2: not JSON (column 10: "),
    ],
    ids=["invalid-utf8", "not-an-object", "not-json"],
)
def test_bad_json_lines_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(CorpusInputError) as err:
        _run(tmp_path, CorpusSource(path=str(path)))
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(CorpusInputError, match="matches no file"):
        _run(tmp_path, CorpusSource(path=str(tmp_path / "nope*.jsonl")))


@pytest.mark.parametrize("content", [b"", b'{"text": "too short"}\n'])
def test_empty_corpus_is_an_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(CorpusInputError, match="no sentence") as err:
        _run(tmp_path, CorpusSource(path=str(path)))
    assert str(path) in str(err.value)  # the message names the file


def test_wrong_text_field_is_an_error(tmp_path):
    _write_jsonl(tmp_path / "a.jsonl", [{"body": GOOD}])
    with pytest.raises(CorpusInputError, match="no field 'text'"):
        _run(tmp_path, CorpusSource(path=str(tmp_path / "a.jsonl")))


def test_shared_web_documents(tmp_path, assets):
    counts, table = _run(tmp_path, CorpusSource(path=str(assets / "corpus" / "*.json*")))
    assert counts.documents == 30
    assert counts.sentences_seen == sum(counts.dropped.values()) + len(table)
    assert table["text"].n_unique() == len(table) > 1000
    assert table["text"].str.split(" ").list.len().min() >= 6


def test_demo_profile_keeps_every_recorded_sentence(tmp_path, assets):
    from nuner_core.config import load_config

    out = tmp_path / "s.parquet"
    counts, kept = build_sentences(load_config("demo").corpus, out)
    assert kept == 1662 and counts.documents == 1662
