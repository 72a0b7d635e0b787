"""Running the app under uvicorn: the options of ``nuner serve``, one process or ``--workers N``.

With several workers uvicorn starts N processes that each build the app from ``app_from_env``
(the options travel as JSON in ``NUNER_SERVE_OPTIONS``), so each loads its own model instance.
Graceful shutdown is uvicorn's: on SIGTERM/SIGINT it stops accepting, answers the requests in
flight, then the app's lifespan answers anything still queued and stops the worker thread.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import FastAPI

from nuner_core.serving.app import WARM_LABELS, create_app
from nuner_core.serving.limits import Limits
from nuner_core.serving.models import check_source, load_model, model_kind, parse_model_options, resolve_source

OPTIONS_ENV = "NUNER_SERVE_OPTIONS"


@dataclass(frozen=True)
class ServeOptions:
    models: dict[str, str]  # name -> source (directory or store artifact)
    backend: str = "torch"
    device: str = "auto"
    limits: Limits = field(default_factory=Limits)
    max_batch_tokens: int = 8192
    max_wait_ms: float = 5.0
    label_cache_size: int = 100_000
    warm_labels: tuple[str, ...] = WARM_LABELS
    threads: int | None = None  # CPU threads of the encoders (torch's, or onnxruntime's); None: the library's default

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        raw: dict[str, Any] = json.loads(text)
        return cls(**{**raw, "limits": Limits(**raw["limits"]), "warm_labels": tuple(raw["warm_labels"])})

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def parse_models(values: list[str]) -> dict[str, str]:
    """``--model`` values checked without loading weights (fails fast, before uvicorn starts)."""
    models = parse_model_options(values)
    for source in models.values():
        check_source(source)
    return models


def build_app(options: ServeOptions) -> FastAPI:
    if options.threads is not None and (options.backend == "torch" or any(model_kind(resolve_source(s)) == "token_classifier"
                                                                          for s in options.models.values())):
        import torch

        torch.set_num_threads(options.threads)
    loaded = [load_model(name, source, backend=options.backend, device=options.device, max_labels=options.label_cache_size,
                         threads=options.threads) for name, source in options.models.items()]  # fmt: skip
    return create_app(loaded, options.limits, max_batch_tokens=options.max_batch_tokens, max_wait_ms=options.max_wait_ms,
                      warm_labels=options.warm_labels)  # fmt: skip


def app_from_env() -> FastAPI:
    """The app factory each ``--workers`` process calls."""
    return build_app(ServeOptions.from_json(os.environ[OPTIONS_ENV]))


def serve(options: ServeOptions, host: str = "127.0.0.1", port: int = 8080, workers: int = 1, log_level: str = "info") -> None:
    import uvicorn

    if workers > 1:
        os.environ[OPTIONS_ENV] = options.to_json()
        uvicorn.run("nuner_core.serving.server:app_from_env", factory=True, host=host, port=port, workers=workers, log_level=log_level)
        return
    uvicorn.run(build_app(options), host=host, port=port, log_level=log_level)
