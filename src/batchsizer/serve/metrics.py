"""``GET /metrics``: the server's state in the Prometheus text format (prometheus-client).

Histograms (latency, batch size) and the request counter are updated as requests are answered; the
gauges (sensor power, cap, size cap and why, queue depth, energy per request, time over the cap) are
read from the engine at each scrape. Each app has its own registry, so several servers in one
process (tests) do not clash.
"""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from batchsizer.core.loop import LoopObserver

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _EngineGauges:
    """Gauges read at scrape time."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self) -> Any:
        e = self.engine
        now = e.device.clock.now()
        cap = e.batcher.size_cap(now)
        rec = e.last_period
        power = GaugeMetricFamily(
            "batchsizer_power_watts", "Sensor power over the last control period", labels=["stat"]
        )
        if rec is not None:
            power.add_metric(["peak"], _num(rec.observation.peak_w))
            power.add_metric(["mean"], _num(rec.observation.mean_w))
        yield power
        watts = e.caps.cap_at(max(now - getattr(e, "t0", now), 0.0))
        yield GaugeMetricFamily("batchsizer_cap_watts", "Power cap in force", value=_num(watts))
        size = GaugeMetricFamily("batchsizer_size_cap", "Batch-size cap and its two limits", labels=["limit"])
        size.add_metric(["effective"], cap.size)
        size.add_metric(["power"], cap.power_size)
        size.add_metric(["latency"], cap.latency_size)
        yield size
        why = GaugeMetricFamily("batchsizer_size_cap_reason", "1 for what sets the size cap now", labels=["reason"])
        for r in ("power", "latency"):
            why.add_metric([r], 1.0 if cap.why == r else 0.0)
        yield why
        yield GaugeMetricFamily("batchsizer_queue_depth", "Requests waiting for a batch", value=e.batcher.depth)
        answered = e.latency.outcomes.get("ok", 0)
        yield GaugeMetricFamily(
            "batchsizer_energy_per_request_joules",
            "Energy measured so far per answered request",
            value=e.energy_j / answered if answered else math.nan,
        )
        yield GaugeMetricFamily("batchsizer_energy_joules", "Energy measured so far", value=e.energy_j)
        yield GaugeMetricFamily(
            "batchsizer_over_cap_seconds", "Time with the sensor over the cap", value=e.over_cap.over_s
        )
        frac = e.over_cap.over_s / e.observed_s if e.observed_s > 0 else 0.0
        yield GaugeMetricFamily("batchsizer_over_cap_ratio", "Share of the time over the cap", value=frac)


def _num(x: float) -> float:
    return float(x) if x is not None and math.isfinite(x) else math.nan


class ServerMetrics(LoopObserver):
    """The registry of one server, and the hooks that feed it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "batchsizer_request_latency_seconds",
            "Latency of answered requests, arrival to answer",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch = Histogram(
            "batchsizer_batch_size", "Size of the batches run", buckets=SIZE_BUCKETS, registry=self.registry
        )
        self.requests = Counter(
            "batchsizer_requests", "Requests by outcome", labelnames=["outcome"], registry=self.registry
        )
        for outcome in ("ok", "rejected", "failed", "bad_request"):
            self.requests.labels(outcome)

    def attach(self, engine: Any) -> None:
        """Add gauges read from ``engine`` at scrape time (cap, sizes, queue, power)."""
        self.registry.register(_EngineGauges(engine))  # type: ignore[arg-type]

    def on_batch(self, index: int, batch: Any, outcome: Any, setting: Any) -> None:
        """Observe the batch's size in the batch-size histogram."""
        self.batch.observe(len(batch))

    def answered(self, outcome: str, latency_s: float | None = None) -> None:
        """Count a request by outcome and observe its latency (s) when it has one."""
        self.requests.labels(outcome).inc()
        if latency_s is not None:
            self.latency.observe(latency_s)

    def render(self) -> bytes:
        """The registry in Prometheus text format, for ``GET /metrics``."""
        return generate_latest(self.registry)
