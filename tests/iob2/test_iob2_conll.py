"""CoNLL/BIO loading: every format quirk of the shared files and the usual others, table-driven."""

from __future__ import annotations

import pytest

from nuner_core.evaluation.benchmarks import REGISTRY, load_benchmark
from nuner_core.iob2.conll import ConllFormatError, TypeNames, mentions, read_conll, to_iob2

# (case, file bytes, expected sentences as [(tokens, IOB2 tags)], expected repaired tags)
CASES = [
    ("space separated, no final newline (MIT Restaurant)",
     b"a O\nfour B-Rating\nstar I-Rating\n\nbar B-Amenity",
     [(("a", "four", "star"), ("O", "B-Rating", "I-Rating")), (("bar",), ("B-Amenity",))], 0),
    ("tab separated, upper-case types (MIT Movie)",
     b"romantic\tB-GENRE\ncomedies\tI-GENRE\n\nright\tB-YEAR\n",
     [(("romantic", "comedies"), ("B-GENRE", "I-GENRE")), (("right",), ("B-YEAR",))], 0),
    ("-DOCSTART- with a tag, blank line after it, trailing blank line (JNLPBA)",
     b"-DOCSTART-\tO\n\nhuman\tB-DNA\nSCL\tI-DNA\n\n-DOCSTART-\tO\n\nT\tB-cell_type\n\n",
     [(("human", "SCL"), ("B-DNA", "I-DNA")), (("T",), ("B-cell_type",))], 0),
    ("-DOCSTART- without a tag and without a blank line after it",
     b"-DOCSTART-\nx B-PER\n-DOCSTART- -X- O O\ny O\n",
     [(("x",), ("B-PER",)), (("y",), ("O",))], 0),
    ("many blank lines, whitespace-only lines",
     b"\n\n a O\n   \n\t\nb B-X\n\n\n",
     [(("a",), ("O",)), (("b",), ("B-X",))], 0),
    ("CRLF line endings and a UTF-8 BOM",
     b"\xef\xbb\xbfa O\r\nb B-X\r\n\r\nc I-X\r\n",
     [(("a", "b"), ("O", "B-X")), (("c",), ("B-X",))], 1),
    ("IOB1: I- starts entities, B- only between adjacent same-type entities",
     b"Mr O\nJohn I-PER\nSmith I-PER\nMary B-PER\nand O\nParis I-LOC\n",
     [(("Mr", "John", "Smith", "Mary", "and", "Paris"), ("O", "B-PER", "I-PER", "B-PER", "O", "B-LOC"))], 2),
    ("IO: only I- tags, a change of type starts a new entity",
     b"new I-LOC\nyork I-LOC\nknicks I-ORG\n",
     [(("new", "york", "knicks"), ("B-LOC", "I-LOC", "B-ORG"))], 2),
    ("tags in any case: prefix and type; first spelling of a type wins",
     b"a b-actor\nb I-ACTOR\nc o\nd B-Actor\n",
     [(("a", "b", "c", "d"), ("B-actor", "I-actor", "O", "B-actor"))], 0),
    ("CoNLL-2003 four columns: token first, tag last",
     b"EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n",
     [(("EU", "rejects"), ("B-ORG", "O"))], 0),
    ("tab-separated token holding a space; several spaces between columns",
     b"New York\tB-LOC\nis     O\n",
     [(("New York", "is"), ("B-LOC", "O"))], 0),
    ("types with underscores and dashes",
     b"x B-Character_Name\ny I-Character_Name\nz B-cell-line\n",
     [(("x", "y", "z"), ("B-Character_Name", "I-Character_Name", "B-cell-line"))], 0),
    ("empty file", b"", [], 0),
    ("only -DOCSTART- and blank lines", b"-DOCSTART- O\n\n\n", [], 0),
]


@pytest.mark.parametrize("case, content, expected, repaired", CASES, ids=[c[0] for c in CASES])
def test_reads_tricky_files(tmp_path, case, content, expected, repaired):
    path = tmp_path / "data.bio"
    path.write_bytes(content)
    sentences, stats = read_conll(path)
    assert [(s.tokens, s.tags) for s in sentences] == expected
    assert stats.repaired_tags == repaired
    assert stats.sentences == len(expected)


ERRORS = [
    ("one column", b"a O\nlonely\n", 2, "expected 'token<space or tab>tag'"),
    ("unknown prefix", b"a O\n\nb X-PER\n", 3, "'X-PER'"),
    ("IOBES is not IOB", b"a S-PER\n", 1, "'S-PER'"),
    ("prefix without a type", b"a O\nb B-\n", 2, "'B-'"),
    ("tag without a prefix", b"a PER\n", 1, "'PER'"),
    ("tab line with an empty tag", b"a\t\n", 1, "expected"),
]


@pytest.mark.parametrize("case, content, line, fragment", ERRORS, ids=[e[0] for e in ERRORS])
def test_malformed_file_names_file_and_line(tmp_path, case, content, line, fragment):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ConllFormatError) as err:
        read_conll(path)
    assert f"{path}:{line}:" in str(err.value)
    assert fragment in str(err.value)


def test_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 O\n".encode("latin-1"))
    with pytest.raises(ConllFormatError, match=str(path)):
        read_conll(path)


def test_type_names_are_shared_across_files(tmp_path):
    (tmp_path / "train").write_text("a B-Actor\n")
    (tmp_path / "test").write_text("b B-ACTOR\n")
    names = TypeNames()
    train, _ = read_conll(tmp_path / "train", names)
    test, _ = read_conll(tmp_path / "test", names)
    assert train[0].tags == test[0].tags == ("B-Actor",)


@pytest.mark.parametrize(
    "tags, spans",
    [
        (["B-A", "I-A", "O", "B-B"], [(0, 2, "A"), (3, 4, "B")]),
        (["B-A", "B-A"], [(0, 1, "A"), (1, 2, "A")]),
        (["I-A", "I-A"], []),  # strict: I- without B- opens nothing
        (["B-A", "I-B", "I-B"], [(0, 1, "A")]),
        ([], []),
    ],
)
def test_mentions_strict_iob2(tags, spans):
    assert mentions(tags) == spans


def test_to_iob2_is_idempotent_on_iob2():
    parsed = [("B", "X"), ("I", "X"), ("O", None), ("B", "Y")]
    tags, repaired = to_iob2(parsed)
    assert (tags, repaired) == (["B-X", "I-X", "O", "B-Y"], 0)


# Expected by reading the shared files: sentences (pool / test), entity types, -DOCSTART- lines.
SHARED = [
    ("mit_restaurant", 7660, 1521, 8, 0),
    ("mit_movie", 9775, 2443, 12, 0),
    ("mit_movie_trivia", 7816, 1953, 12, 0),
    ("jnlpba", 1739, 3856, 5, 200),
]


@pytest.mark.parametrize("name, pool, test, n_types, docstarts", SHARED, ids=[s[0] for s in SHARED])
def test_shared_benchmarks(assets, name, pool, test, n_types, docstarts):
    bench = load_benchmark(REGISTRY[name])
    assert (len(bench.pool.sentences), len(bench.test.sentences), len(bench.types)) == (pool, test, n_types)
    assert bench.pool.stats["docstarts"] == docstarts
    assert bench.pool.stats["repaired_tags"] == bench.test.stats["repaired_tags"] == 0  # the shared files are IOB2
    assert all(len(s.tokens) == len(s.tags) > 0 for s in bench.pool.sentences + bench.test.sentences)
    assert not any(t.startswith("-DOCSTART-") for s in bench.pool.sentences for t in s.tokens)


def test_test_subsample_is_seeded(assets):
    a = load_benchmark(REGISTRY["mit_restaurant"], max_test=50, test_seed=1)
    b = load_benchmark(REGISTRY["mit_restaurant"], max_test=50, test_seed=1)
    c = load_benchmark(REGISTRY["mit_restaurant"], max_test=50, test_seed=2)
    assert a.test.sentences == b.test.sentences != c.test.sentences
    assert len(a.test.sentences) == 50 and a.test_total == 1521
    assert a.test.fingerprint == b.test.fingerprint != c.test.fingerprint


def test_hub_source_read_from_a_local_copy_of_a_tner_repo(tmp_path):
    """The tner code path (JSON lines of word lists and tag ids, ids named by dataset/label.json), offline."""
    import json

    from nuner_core.evaluation.config import BenchmarkSpec, HubSource

    repo = tmp_path / "tner-like"
    (repo / "dataset").mkdir(parents=True)
    (repo / "dataset" / "label.json").write_text(json.dumps({"O": 0, "B-LOC": 1, "I-LOC": 2, "I-PER": 3}))
    rows = {"train00": [(["new", "york"], [1, 2]), (["bob"], [3])], "train01": [(["x"], [0])], "test": [(["paris", "bob"], [1, 3])]}
    for name, records in rows.items():
        lines = [json.dumps({"tokens": t, "tags": g}) for t, g in records]
        (repo / "dataset" / f"{name}.json").write_text("\n".join(lines) + "\n")
    spec = BenchmarkSpec(name="local-tner", source=HubSource(
        path=str(repo), data_files={"train": "dataset/train*.json", "test": "dataset/test.json"}))
    bench = load_benchmark(spec)
    assert sorted(s.tags for s in bench.pool.sentences) == [("B-LOC", "I-LOC"), ("B-PER",), ("O",)]
    assert bench.test.sentences[0].tags == ("B-LOC", "B-PER")
    assert bench.types == ["LOC", "PER"] and bench.pool.stats["repaired_tags"] == 1
