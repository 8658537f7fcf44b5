"""Prometheus metrics (prometheus-client), one registry per app.

A registry per app rather than the global default: tests build several apps in one
process and the default registry refuses duplicate metric names. With several uvicorn
workers (``facegate serve --workers N``) prometheus-client's multiprocess mode is on
(``PROMETHEUS_MULTIPROC_DIR``, set by the serve command): every worker writes its counts
to shared files and ``/metrics``, whichever worker answers, reports the sum.

Route labels use the route's path template (``/v1/collections/{collection_id}``), never
the raw path, so ids cannot blow up label cardinality; unmatched paths count as
``<unmatched>``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("facegate.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class _GalleryCollector:
    """Gallery size and batcher queue depth, read at scrape time (never stale)."""

    def __init__(self, app_state: Any) -> None:
        self.state = app_state

    def collect(self):
        size = GaugeMetricFamily("facegate_gallery_faces", "Enrolled faces per collection.", labels=["collection"])
        idents = GaugeMetricFamily(
            "facegate_gallery_identities", "Enrolled identities per collection.", labels=["collection"]
        )
        indexed = GaugeMetricFamily(
            "facegate_index_vectors", "Vectors in this process's FAISS indexes.", labels=["collection_model"]
        )
        gallery = getattr(self.state, "gallery", None)
        if gallery is not None:
            try:
                gs = gallery.gallery_size()
                for cid, c in gs.per_collection.items():
                    size.add_metric([cid], c.get("faces", 0))
                    idents.add_metric([cid], c.get("identities", 0))
                for k, n in gs.indexed.items():
                    indexed.add_metric([k], n)
            except Exception:  # a scrape must not fail because the DB blinked
                log.warning("gallery size unavailable for metrics", exc_info=True)
        yield size
        yield idents
        yield indexed
        q = GaugeMetricFamily("facegate_embed_queue_depth", "Crops waiting in the recognizers' micro-batchers.")
        pipeline = getattr(self.state, "pipeline", None)
        q.add_metric([], pipeline.queue_depth() if pipeline is not None else 0)
        yield q


class Metrics:
    def __init__(self, app_state: Any) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "facegate_http_requests", "HTTP requests by route, method and status.",
            ["route", "method", "status"], registry=r,
        )
        self.latency = Histogram(
            "facegate_http_request_duration_seconds", "Request latency by route and method.",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.faces_embedded = Counter(
            "facegate_faces_embedded", "Faces embedded, by recognizer.", ["model"], registry=r
        )
        self.batch_size = Histogram(
            "facegate_embed_batch_size", "Crops per recognizer micro-batch.", ["model"],
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.in_flight = Gauge("facegate_http_requests_in_flight", "Requests being served.", registry=r,
                               multiprocess_mode="livesum")
        self.gallery = _GalleryCollector(app_state)
        r.register(self.gallery)

    def on_batch(self, model: str, size: int) -> None:
        """Hooked to ``FacePipeline.on_batch``: every recognizer run, with its batch size."""
        self.batch_size.labels(model).observe(size)
        self.faces_embedded.labels(model).inc(size)

    def render(self) -> bytes:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return generate_latest(self.registry)
        merged = CollectorRegistry()  # every worker's counters, summed, plus the gallery's gauges
        multiprocess.MultiProcessCollector(merged)
        merged.register(self.gallery)
        return generate_latest(merged)

    @staticmethod
    def process_exit() -> None:
        """Tell the multiprocess files this worker is gone (its live gauges stop counting)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.mark_process_dead(os.getpid())
