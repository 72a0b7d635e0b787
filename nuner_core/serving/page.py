"""The page at ``/`` of ``nuner serve``: try a served model in a browser.

Plain HTML, JavaScript and CSS shipped inside the package (``serving/page/``, package data), served
by the app itself: no build step, no CDN, no external asset. The page only calls the public API
(``GET /v1/models``, ``POST /v1/tag``, ``POST /v1/predict``), so it shows what any client gets.
The Content-Security-Policy header keeps it that way: the browser refuses anything not from the app.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

PAGE_DIR = Path(__file__).parent / "page"
CSP = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


def mount_page(app: FastAPI) -> None:
    """``GET /`` (the page) and ``/page/*`` (its script and style sheet), outside the OpenAPI schema."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html", headers={"Content-Security-Policy": CSP})

    app.mount("/page", StaticFiles(directory=PAGE_DIR), name="page")
