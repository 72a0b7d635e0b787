"""The one JSON-lines reader: objects with their line numbers, and every problem named as file:line."""

import gzip

import pytest

from nuner_core.jsonl import JsonLinesError, read_json_lines, read_json_objects


def test_objects_with_line_numbers_blank_lines_and_bom_skipped(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes('\ufeff{"a": 1}\n\n  \n{"b": "é"}\r\n'.encode())
    assert list(read_json_lines(path)) == [(1, {"a": 1}), (4, {"b": "é"})]
    assert read_json_objects(path) == [{"a": 1}, {"b": "é"}]


def test_gzip_is_read_through(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write('{"a": 1}\n')
    assert read_json_objects(path) == [{"a": 1}]


@pytest.mark.parametrize(
    "content, problem",
    [
        (b'{"a": 1}\n{"a": \xff}\n', "not UTF-8 text"),
        (b'{"a": 1}\n{"a": oops}\n', "not JSON (column 7: Expecting value)"),
        (b'{"a": 1}\n[1, 2]\n', "expected a JSON object, got a JSON list"),
    ],
    ids=["not-utf8", "not-json", "not-an-object"],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path, content, problem):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(JsonLinesError) as err:
        read_json_objects(path)
    assert str(err.value).startswith(f"{path}:2: {problem}")
    assert (err.value.path, err.value.lineno) == (path, 2)


def test_a_json_array_on_line_one_gets_a_hint(tmp_path):
    path = tmp_path / "array.jsonl"
    path.write_text('[{"a": 1},\n {"a": 2}]\n')
    with pytest.raises(JsonLinesError, match="a JSON array\\? give one object per line"):
        read_json_objects(path)


def test_on_invalid_skips_and_reports(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"a": 1}\nnope\n"text"\n{"a": 2}\n')
    seen: list[JsonLinesError] = []
    assert list(read_json_lines(path, on_invalid=seen.append)) == [(1, {"a": 1}), (4, {"a": 2})]
    assert [e.lineno for e in seen] == [2, 3]
