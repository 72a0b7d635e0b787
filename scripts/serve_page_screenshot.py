#!/usr/bin/env python3
"""Use the page of a running ``nuner serve`` in headless Chromium: tag one text, save a screenshot.

    .venv/bin/nuner serve --model nuner=/path/to/pretrain/run &
    .venv/bin/python scripts/serve_page_screenshot.py --url http://127.0.0.1:8080 --example Science --out docs/serve-page.png

It types the text (``--text``, or the page's example button ``--example``) and the labels into
the page through the DevTools protocol (``ui_screenshot.Browser``), presses the button, waits for
the answer and prints the highlighted entities as JSON lines; exit status 1 if the page showed an
error instead, 2 if Chromium could not be started. ``tests/serving/test_page_browser.py`` drives
the page with the same functions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ui_screenshot import Browser, UICheckFailed


def open_page(browser: Browser, url: str, timeout_s: float = 30.0) -> None:
    """Load the page and wait until it has listed the models."""
    browser.call("Page.navigate", url=url.rstrip("/") + "/")
    _wait(browser, "document.body && document.body.dataset.ready === 'true'", timeout_s, "the page listing the models")


def fill(browser: Browser, *, model: str | None = None, text: str | None = None, labels: str | None = None, example: str | None = None) -> None:
    """Pick the model, click an example button, then type ``text`` and ``labels`` (as keyboard input: Input.insertText)."""
    if model is not None:
        picked = browser.js(f"(() => {{ const s = document.getElementById('model'); s.value = {json.dumps(model)};"
                            f" s.dispatchEvent(new Event('change')); return s.value; }})()")  # fmt: skip
        if picked != model:
            raise UICheckFailed(f"no model {model!r} in the page's picker")
    if example is not None and not browser.js(f"(() => {{ const b = [...document.querySelectorAll('#examples button')]"
                                              f".find(b => b.textContent === {json.dumps(example)}); if (b) b.click(); return !!b; }})()"):  # fmt: skip
        raise UICheckFailed(f"no example button {example!r} on the page")
    for element, value in (("text", text), ("labels", labels)):
        if value is not None:
            browser.js(f"(() => {{ const e = document.getElementById('{element}'); e.value = ''; e.focus(); }})()")
            if value:
                browser.call("Input.insertText", text=value)


def submit(browser: Browser, timeout_s: float = 30.0) -> tuple[list[dict[str, Any]], str | None]:
    """Press the button; wait for the answer. Returns (the highlighted entities, the error the page shows or None)."""
    before = browser.js("Number(document.body.dataset.answers || 0)")
    browser.js("document.getElementById('submit').click()")
    _wait(browser, f"Number(document.body.dataset.answers || 0) > {before}", timeout_s, "the answer")
    error = browser.js("(() => { const e = document.getElementById('error'); return e.hidden ? null : e.textContent; })()")
    marks = browser.js("""[...document.querySelectorAll('#output mark')].map(m => ({
        start: Number(m.dataset.start), end: Number(m.dataset.end), label: m.dataset.label, score: Number(m.dataset.score),
        text: m.firstChild.textContent, title: m.title, colour: getComputedStyle(m).backgroundColor}))""")
    return list(marks or []), error


def _wait(browser: Browser, condition: str, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if browser.js(condition):
            return
        time.sleep(0.1)
    raise UICheckFailed(f"{what}: not there after {timeout_s:.0f} s; the page showed:\n{browser.text()[:2000]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the running nuner serve")
    parser.add_argument("--model", help="the model to pick (default: the first)")
    parser.add_argument("--example", help="click this example button (its text and labels)")
    parser.add_argument("--text", help="the text to tag (typed after --example)")
    parser.add_argument("--labels", help="comma-separated labels (typed after --example)")
    parser.add_argument("--out", type=Path, default=Path("serve-page.png"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium", help="the browser binary")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=690)
    args = parser.parse_args(argv)
    try:
        browser = Browser(args.chromium, args.width, args.height, 60.0)
    except OSError as exc:
        print(f"serve_page_screenshot: cannot run chromium: {exc}", file=sys.stderr)
        return 2
    try:
        open_page(browser, args.url)
        fill(browser, model=args.model, example=args.example, text=args.text, labels=args.labels)
        entities, error = submit(browser, timeout_s=120.0)
        browser.screenshot(args.out)
    except UICheckFailed as exc:
        print(f"serve_page_screenshot: {exc}", file=sys.stderr)
        return 1
    finally:
        browser.close()
    for entity in entities:
        print(json.dumps(entity))
    print(f"saved {args.out}" + (f"; the page shows an error: {error}" if error else ""))
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
