"""The page at `/` of `nuner serve`: served from the package with no external asset, and driven in headless Chromium
against a real server (uvicorn on 127.0.0.1): what it highlights is what the API answers."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import httpx
import pytest
from server_process import start_server, stop_server

from nuner_core.serving.page import PAGE_DIR

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # the page driver: scripts/serve_page_screenshot.py

chromium = pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")

# a character outside the BMP before the entities: the API counts code points, JavaScript UTF-16 units
TEXT = "🍕 Alice ate pizza in Paris, then Bob flew to Tokyo."


def test_the_page_and_its_assets_come_from_the_app_and_name_nothing_outside(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert f'"page/{name}"' in page.text
        assert client.get(f"/page/{name}").text == (PAGE_DIR / name).read_text()
    for path in PAGE_DIR.iterdir():
        assert not re.search(r"(https?:)?//[a-z]|@import|url\(", path.read_text()), f"{path.name} names an outside asset"
    assert client.get("/page/nope.js").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]


@pytest.fixture(scope="module")
def server(planted_dir, classifier_dir):
    process, url = start_server("--model", f"nuner={planted_dir}", "--model", f"clf={classifier_dir}", "--device", "cpu")
    yield url
    stop_server(process)


@pytest.fixture(scope="module")
def page(server):
    from serve_page_screenshot import open_page
    from ui_screenshot import Browser

    browser = Browser(shutil.which("chromium") or "chromium", 1100, 800, 60.0)
    try:
        open_page(browser, server)
        yield browser
    finally:
        browser.close()


def _same(marks: list[dict], entities: list[dict]) -> None:
    assert [(m["start"], m["end"], m["label"], m["text"]) for m in marks] == [(e["start"], e["end"], e["label"], e["text"]) for e in entities]
    assert [m["score"] for m in marks] == pytest.approx([e["score"] for e in entities])


@chromium
def test_typed_text_and_labels_are_highlighted_as_v1_tag_answers(server, page):
    from serve_page_screenshot import fill, submit

    model = httpx.get(f"{server}/v1/models").json()["models"][0]
    assert page.js("document.getElementById('threshold-value').textContent") == f"{model['threshold']:.2f}"
    fill(page, model="nuner", text=TEXT, labels="person, food, city")
    marks, error = submit(page)
    answer = httpx.post(f"{server}/v1/tag", json={"model": "nuner", "texts": [TEXT], "labels": ["person", "food", "city"],
                                                  "threshold": model["threshold"]}).json()  # fmt: skip
    assert error is None
    _same(marks, answer["results"][0]["entities"])
    assert {m["text"] for m in marks} >= {"Alice", "pizza", "Paris", "Bob", "Tokyo"}
    assert all(m["label"] in m["title"] and f"{m['score']:.3f}" in m["title"] for m in marks)  # the hover text
    colour = {m["label"]: m["colour"] for m in marks}
    assert len(set(colour.values())) == 3 and all(colour[m["label"]] == m["colour"] for m in marks)
    resources = page.js("performance.getEntriesByType('resource').map(r => r.name)")
    assert resources and all(r.startswith(server) for r in resources), resources


@chromium
def test_an_api_error_is_shown_on_the_page(page):
    from serve_page_screenshot import fill, submit

    fill(page, model="nuner", text="Alice in Paris", labels=" , ")
    marks, error = submit(page)
    assert error is not None and error.startswith("422: no labels") and "[labels]" in error
    fill(page, labels="city")
    marks, error = submit(page)
    assert error is None and [m["text"] for m in marks] == ["Paris"]


@chromium
def test_a_token_classifier_ignores_the_labels_field_and_answers_as_v1_predict(server, page):
    from serve_page_screenshot import fill, submit

    fill(page, model="clf", text=TEXT)
    assert page.js("document.getElementById('labels').disabled && document.getElementById('threshold').disabled"), page.text()
    marks, error = submit(page)
    answer = httpx.post(f"{server}/v1/predict", json={"model": "clf", "texts": [TEXT]}).json()
    assert error is None
    _same(marks, answer["results"][0]["entities"])
    fill(page, model="nuner")
    assert not page.js("document.getElementById('labels').disabled")


@chromium
def test_the_threshold_slider_is_what_the_page_sends(server, page):
    from serve_page_screenshot import fill, submit

    fill(page, model="nuner", text=TEXT, labels="person, food, city")
    page.js("(() => { const s = document.getElementById('threshold'); s.value = '0.95'; s.dispatchEvent(new Event('input')); })()")
    assert page.js("document.getElementById('threshold-value').textContent") == "0.95"
    marks, error = submit(page)  # planted words score 0.92: none passes 0.95
    answer = httpx.post(f"{server}/v1/tag", json={"model": "nuner", "texts": [TEXT], "labels": ["person", "food", "city"], "threshold": 0.95})
    assert error is None and marks == [] == answer.json()["results"][0]["entities"]
    page.js("(() => { const s = document.getElementById('threshold'); s.value = '0.9'; s.dispatchEvent(new Event('input')); })()")
    marks, error = submit(page)
    assert error is None and len(marks) == 5
