"""The spaCy component: ``nlp.add_pipe("nuner_zero_shot")`` on a blank pipeline sets doc.ents from the planted model."""

from __future__ import annotations

import importlib.metadata
import logging
import subprocess
import sys

import pytest
from tagging_helpers import build_planted

spacy = pytest.importorskip("spacy")

LABELS = ["person", "city", "food"]


def ents(doc) -> list[tuple[str, str]]:
    return [(span.text, span.label_) for span in doc.ents]


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    """The planted model with a stored threshold of 0.5, which ``"threshold": None`` uses (0.05, the default, is for real models)."""
    return build_planted(tmp_path_factory.mktemp("planted-0.5"), threshold=0.5)


@pytest.fixture
def nlp(planted_dir):
    nlp = spacy.blank("en")
    nlp.add_pipe("nuner_zero_shot", config={"model": str(planted_dir), "labels": LABELS, "threshold": None, "device": "cpu"})
    return nlp


def test_the_factory_is_a_spacy_entry_point(planted_dir):
    """Installed (pip install -e .), the name alone finds the factory: a fresh interpreter never imports nuner_core itself."""
    points = {p.name: p.value for p in importlib.metadata.entry_points(group="spacy_factories")}
    assert points.get("nuner_zero_shot") == "nuner_core.spacy_component:make_component"
    code = (
        "import sys, spacy\n"
        "nlp = spacy.blank('en')\n"
        f"nlp.add_pipe('nuner_zero_shot', config={{'model': {str(planted_dir)!r}, 'labels': ['city'], 'device': 'cpu'}})\n"
        "print([(e.text, e.label_) for e in nlp('We flew to Tokyo').ents])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[('Tokyo', 'city')]"


def test_add_pipe_sets_doc_ents(nlp):
    doc = nlp("Alice ate pizza in New York with Bob")
    assert ents(doc) == [("Alice", "person"), ("pizza", "food"), ("New York", "city"), ("Bob", "person")]
    assert nlp.pipe_names == ["nuner_zero_shot"]
    assert nlp.get_pipe("nuner_zero_shot").counts.as_dict() == {"entities": 4, "set": 4, "adjusted": 0, "unaligned": 0, "overlapping": 0}


def test_thresholds_per_label_reach_the_tagger(planted_dir):
    """A planted pair has p = 0.92: a threshold of 0.95 for City (another spelling) drops the cities, and only them."""
    nlp = spacy.blank("en")
    nlp.add_pipe("nuner_zero_shot", config={"model": str(planted_dir), "labels": LABELS, "thresholds": {"City": 0.95}, "device": "cpu"})
    assert ents(nlp("Alice ate pizza in New York with Bob")) == [("Alice", "person"), ("pizza", "food"), ("Bob", "person")]


def test_nlp_pipe_tags_a_batch_per_tagger_call(nlp):
    texts = ["Alice in Paris", "Bob likes bread", "nothing here", "Marie in Zurich", "", "pasta in London", "Tokyo"]
    component = nlp.get_pipe("nuner_zero_shot")
    one_by_one = [ents(nlp(t)) for t in texts]
    calls: list[int] = []
    predict = component.tagger.predict
    component.tagger.predict = lambda batch, *args, **kwargs: calls.append(len(batch)) or predict(batch, *args, **kwargs)
    batched = [ents(doc) for doc in nlp.pipe(texts, batch_size=2)]
    assert batched == one_by_one and batched[1] == [("Bob", "person"), ("bread", "food")]
    assert calls == [2, 2, 2, 1] and batched[4] == []


def test_an_entity_inside_a_spacy_token_is_expanded_or_counted(nlp, caplog):
    """spaCy keeps a URL and an e-mail address as one token; the tagger's words split them at the dots and the @."""
    text = "Write to alice@zurich.com or see www.paris.com"
    doc = nlp.make_doc(text)
    assert "www.paris.com" in [t.text for t in doc] and "alice@zurich.com" in [t.text for t in doc]
    component = nlp.get_pipe("nuner_zero_shot")
    with caplog.at_level(logging.WARNING, logger="nuner_core.spacy_component"):
        doc = nlp(text)
    # expand: "paris" becomes its token; "alice" takes its token first, so "zurich" (city) on the same token is counted
    assert ents(doc) == [("alice@zurich.com", "person"), ("www.paris.com", "city")]
    assert component.counts.as_dict() == {"entities": 3, "set": 2, "adjusted": 2, "unaligned": 0, "overlapping": 1}
    assert "'zurich'" in caplog.text and "overlap" in caplog.text

    strict = spacy.blank("en")
    strict.add_pipe("nuner_zero_shot", config={"model": str(component.tagger.path), "labels": LABELS, "alignment_mode": "strict", "device": "cpu"})
    doc = strict(text + " in Berlin")
    assert ents(doc) == [("Berlin", "city")]
    assert strict.get_pipe("nuner_zero_shot").counts.as_dict() == {"entities": 4, "set": 1, "adjusted": 0, "unaligned": 3, "overlapping": 0}


def test_earlier_entities_stay_unless_overwritten(planted_dir):
    def pipeline(overwrite: bool):
        nlp = spacy.blank("en")
        nlp.add_pipe("entity_ruler").add_patterns([{"label": "GPE", "pattern": "Paris"}])
        config = {"model": str(planted_dir), "labels": LABELS, "overwrite_ents": overwrite, "device": "cpu"}
        return nlp, nlp.add_pipe("nuner_zero_shot", config=config)

    nlp, component = pipeline(False)
    assert ents(nlp("Alice in Paris")) == [("Alice", "person"), ("Paris", "GPE")]
    assert (component.counts.set, component.counts.overlapping) == (1, 1)
    nlp, component = pipeline(True)
    assert ents(nlp("Alice in Paris")) == [("Alice", "person"), ("Paris", "city")]
    assert (component.counts.set, component.counts.overlapping) == (2, 0)


@pytest.mark.parametrize(
    "config, message",
    [({"labels": []}, "at least one label"), ({"alignment_mode": "nearest"}, "alignment_mode"), ({"threshold": 2.0}, "threshold"),
     ({"thresholds": {"city": 1.5}}, "threshold"), ({"thresholds": {"town": 0.5}}, "match no label")],
)
def test_bad_config_fails_when_the_pipe_is_added(planted_dir, config, message):
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match=message):
        nlp.add_pipe("nuner_zero_shot", config={"model": str(planted_dir), "labels": LABELS, "device": "cpu", **config})
