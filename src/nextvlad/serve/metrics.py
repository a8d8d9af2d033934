"""The server's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """Requests by endpoint and status, latency, batch sizes, queue depth, load and warm-up."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "nextvlad_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "nextvlad_request_duration_seconds",
            "time from request to response, by endpoint",
            ["endpoint"],
            buckets=_LATENCY,
            registry=r,
        )
        self.batch_size = Histogram(
            "nextvlad_batch_size", "videos in each forward pass", buckets=_SIZES, registry=r
        )
        self.batch_requests = Histogram(
            "nextvlad_batch_requests",
            "requests merged into each forward pass",
            buckets=_SIZES,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "nextvlad_batch_duration_seconds",
            "time of each forward pass",
            buckets=_LATENCY,
            registry=r,
        )
        self.queue_depth = Gauge(
            "nextvlad_queue_depth", "requests waiting for the model", registry=r
        )
        self.load_seconds = Gauge(
            "nextvlad_model_load_seconds", "time to load the model", registry=r
        )
        self.warmup_seconds = Gauge(
            "nextvlad_model_warmup_seconds", "time of the warm-up batch", registry=r
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
