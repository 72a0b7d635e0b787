"""The built docs site loads nothing from the web: no CDN script or stylesheet, no web fonts.

scripts/test.sh builds the site (``mkdocs build --strict``) before the tests and names it in
``NUNER_DOCS_SITE``; run alone, this test builds it itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What a page or a stylesheet loads: <script src>, <link href> (stylesheets, preloaded fonts), CSS url() and @import.
LOADS = re.compile(r"""<script[^>]*\ssrc=["']?(https?:)?//|<link[^>]*\shref=["']?(https?:)?//"""
                   r"""|url\(\s*["']?(https?:)?//|@import\s+["']?(url\()?["']?(https?:)?//""")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    built = os.environ.get("NUNER_DOCS_SITE")
    if built and Path(built, "index.html").is_file():
        return Path(built)
    out = tmp_path_factory.mktemp("site")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    done = subprocess.run([str(mkdocs), "build", "--strict", "--quiet", "-d", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def test_no_page_or_stylesheet_loads_anything_from_the_web(site):
    files = [p for p in site.rglob("*") if p.suffix in {".html", ".css"}]
    pages = [md.relative_to(ROOT / "docs").with_suffix(".html") for md in (ROOT / "docs").rglob("*.md")]
    assert len(pages) >= 20 and all((site / page).is_file() for page in pages)  # every page was built, and is checked here
    offending = {str(p.relative_to(site)): LOADS.search(p.read_text(encoding="utf-8", errors="replace")).group(0)  # type: ignore[union-attr]
                 for p in files if LOADS.search(p.read_text(encoding="utf-8", errors="replace"))}  # fmt: skip
    assert offending == {}


def test_the_offline_search_uses_the_local_worker_shim(site):
    page = (site / "guides" / "tagging.html").read_text(encoding="utf-8")
    assert '<script src="../javascripts/iframe-worker-shim.js"' in page  # not the CDN copy the offline plugin adds by default
    assert (site / "search" / "search_index.js").is_file()  # the index inlined as a script: search works from file://


def test_the_pattern_catches_what_it_is_for():
    for loaded in ('<script src="https://unpkg.com/x">', '<link rel="stylesheet" href="https://fonts.googleapis.com/css?x">',
                   "src: url(https://fonts.gstatic.com/a.woff2)", '@import "https://cdn.example/x.css"', '<script src="//cdn.x/y.js">'):
        assert LOADS.search(loaded), loaded
    for local in ('<script src="assets/javascripts/bundle.js">', '<a href="https://example.org">', 'url("data:image/svg+xml;...")'):
        assert not LOADS.search(local), local
