"""``GET /metrics``: Prometheus text of the server's own registry (several apps in one process never collide).

Requests by route and status, latency per route, texts and requests per tagger call, the queue
depth, and each zero-shot model's label-cache hits, misses (labels embedded) and size.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nuner_core.serving.models import ServedModel

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class LabelCacheCollector(Collector):
    """Read at scrape time from each zero-shot tagger's counters (no bookkeeping on the request path)."""

    def __init__(self, models: Sequence[ServedModel]) -> None:
        self.models = [m for m in models if m.kind == "zero_shot"]

    def collect(self) -> Iterable[Metric]:
        hits = CounterMetricFamily("nuner_serve_label_cache_hits", "Label vectors found in the label cache", labels=["model"])
        misses = CounterMetricFamily("nuner_serve_label_cache_misses", "Label names embedded (not in the cache)", labels=["model"])
        size = GaugeMetricFamily("nuner_serve_label_cache_size", "Label vectors held in the cache", labels=["model"])
        for model in self.models:
            stats = model.predictor.stats
            hits.add_metric([model.name], stats.label_cache_hits)
            misses.add_metric([model.name], stats.labels_encoded)
            cache = getattr(getattr(model.predictor, "labels", None), "cache", None) or getattr(model.predictor, "cache", None)
            size.add_metric([model.name], len(cache) if cache is not None else 0)
        yield from (hits, misses, size)


class Metrics:
    def __init__(self, models: Sequence[ServedModel], queue_depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("nuner_serve_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry)
        self.latency = Histogram("nuner_serve_request_seconds", "Request latency by route", ["route"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)  # fmt: skip
        self.batch_texts = Histogram("nuner_serve_batch_texts", "Texts per tagger call", buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram("nuner_serve_batch_requests", "Requests merged into one tagger call", buckets=BATCH_BUCKETS,
                                        registry=self.registry)  # fmt: skip
        depth = Gauge("nuner_serve_queue_depth", "Requests waiting for the worker thread", registry=self.registry)
        depth.set_function(lambda: float(queue_depth()))
        self.registry.register(LabelCacheCollector(models))

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, texts: int, requests: int) -> None:
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)

    def render(self) -> bytes:
        return generate_latest(self.registry)
