"""``create_app(models, limits) -> FastAPI``: the routes of ``nuner serve``.

``POST /v1/tag`` (zero-shot, any labels), ``POST /v1/predict`` (token classifiers), ``GET /v1/models``,
``GET /healthz`` (the process answers), ``GET /readyz`` (models loaded, label cache warm),
``GET /metrics`` (Prometheus text), OpenAPI at ``/docs``. ``/`` is left for the page.
Requests are checked (``limits``) before they are queued; inference is the batcher's.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Hashable, MutableMapping, Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from nuner_core.serving.batcher import Batcher, ZeroShotOptions
from nuner_core.serving.limits import ClientError, Limits, PredictRequest, TagRequest, check_labels, check_texts, check_thresholds, validation_error
from nuner_core.serving.metrics import CONTENT_TYPE, Metrics
from nuner_core.serving.models import ServedModel
from nuner_core.serving.page import mount_page

WARM_LABELS = ("person", "organization", "location", "date")  # embedded at start-up: /readyz waits for them
WARM_TEXT = "Marie Curie worked in Paris in 1903."

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def create_app(
    models: Sequence[ServedModel],
    limits: Limits | None = None,
    *,
    max_batch_tokens: int = 8192,
    max_wait_ms: float = 5.0,
    warm_labels: Sequence[str] = WARM_LABELS,
) -> FastAPI:
    """The service over already-loaded ``models`` (``models.load_model``); batching and limits as configured."""
    limits = limits or Limits()
    by_name = {m.name: m for m in models}
    if len(by_name) != len(models) or not models:
        raise ValueError("give at least one model, each name once")
    batcher = Batcher(max_batch_tokens, max_wait_ms / 1000)
    metrics = Metrics(models, lambda: len(batcher.queue))
    batcher.on_batch = metrics.observe_batch

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            await _warm_up(batcher, models, list(warm_labels))
            app.state.ready = True
            yield
        finally:
            app.state.ready = False
            await batcher.stop()  # uvicorn has answered every request in flight before this runs

    app = FastAPI(title="nuner serve", summary="NuNER zero-shot and fine-tuned NER models", lifespan=lifespan)
    app.state.ready, app.state.batcher, app.state.limits, app.state.models = False, batcher, limits, by_name
    app.add_middleware(_BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(_Observe, metrics=metrics, routes=app.router)
    _errors(app)
    mount_page(app)  # GET /: the page (serving/page.py)

    @app.post("/v1/tag", summary="zero-shot NER: tag texts with any label names")
    async def tag(request: TagRequest) -> dict[str, Any]:
        model = _model(by_name, request.model, "zero_shot", "/v1/predict")
        check_texts(request.texts, limits)
        labels = check_labels(request.labels, limits)
        threshold = model.threshold if request.threshold is None else request.threshold
        assert threshold is not None
        check_thresholds(labels, threshold, request.thresholds)
        options = ZeroShotOptions(tuple(labels), threshold, tuple(sorted((request.thresholds or {}).items())), request.decoding)
        return await _answer(batcher, model, options, request.texts, limits)

    @app.post("/v1/predict", summary="NER with a fine-tuned token classifier")
    async def predict(request: PredictRequest) -> dict[str, Any]:
        model = _model(by_name, request.model, "token_classifier", "/v1/tag")
        check_texts(request.texts, limits)
        return await _answer(batcher, model, None, request.texts, limits)

    @app.get("/v1/models", summary="the served models")
    async def list_models() -> dict[str, Any]:
        return {"models": [m.describe() for m in models]}

    @app.get("/healthz", summary="the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="models loaded and the label cache warm")
    async def readyz() -> JSONResponse:
        ready = bool(app.state.ready)
        return JSONResponse({"ready": ready, "models": list(by_name)}, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


def _model(by_name: dict[str, ServedModel], name: str, kind: str, other_route: str) -> ServedModel:
    model = by_name.get(name)
    if model is None:
        raise ClientError(404, f"no model {name!r}; served: {', '.join(sorted(by_name))}", "model")
    if model.kind != kind:
        raise ClientError(422, f"model {name!r} is a {model.kind.replace('_', '-')} model: use {other_route}", "model")
    return model


async def _answer(batcher: Batcher, model: ServedModel, options: Hashable, texts: list[str], limits: Limits) -> dict[str, Any]:
    future = batcher.submit(model, options, texts)
    try:
        results = await asyncio.wait_for(asyncio.shield(future), limits.timeout_s)
    except asyncio.TimeoutError:
        future.cancel()  # a queued job is dropped; a running one finishes and its answer is discarded
        raise ClientError(503, f"not answered within {limits.timeout_s:g} s (the server is busy): retry later",
                          limit=limits.timeout_s, headers={"Retry-After": str(limits.retry_after_s)}) from None  # fmt: skip
    return {"model": model.name, "results": [{"entities": entities} for entities in results]}


async def _warm_up(batcher: Batcher, models: Sequence[ServedModel], labels: list[str]) -> None:
    """One small request per model: loads lazy kernels and fills the label cache with ``labels``."""
    for model in models:
        options = ZeroShotOptions(tuple(labels), float(model.threshold or 0.5)) if model.kind == "zero_shot" and labels else None
        if model.kind == "zero_shot" and options is None:
            continue
        await batcher.submit(model, options, [WARM_TEXT])


def _errors(app: FastAPI) -> None:
    """Every client mistake as ``{"error", "field", "limit"?}`` (``limits``); never FastAPI's list of details."""

    @app.exception_handler(ClientError)
    async def client_error(request: Request, exc: ClientError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = validation_error(exc.errors())
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc, _TooLarge):
            return JSONResponse(exc.error.body(), status_code=413)
        return JSONResponse({"error": str(exc.detail), "field": None}, status_code=exc.status_code, headers=exc.headers)


class _TooLarge(HTTPException):
    """Raised while the body streams in (FastAPI re-raises an HTTPException from body parsing as it is)."""

    def __init__(self, max_bytes: int) -> None:
        self.error = ClientError(413, f"the request body is over {max_bytes:,} bytes", "body", max_bytes)
        super().__init__(413, self.error.message)


class _BodyLimit:
    """413 for a body over the cap: at once from Content-Length, else while it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            error = _TooLarge(self.max_bytes).error
            return await JSONResponse(error.body(), status_code=413)(scope, receive, send)
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


class _Observe:
    """Counts every request by route template and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Any) -> None:
        self.app, self.metrics = app, metrics
        self.paths = {getattr(route, "path", None) for route in routes.routes}  # built on the first request: every route is there

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or (scope["path"] if scope["path"] in self.paths else "other")
            self.metrics.observe_request(route, status, time.perf_counter() - started)
