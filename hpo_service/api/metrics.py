"""Prometheus metrics: ``GET /metrics`` in the text exposition format.

Two kinds of figures, kept apart on purpose:

* per process, from a middleware: request counts and latency histograms by route
  template (``/v1/trials/{trial_id}/heartbeat``, never the raw path, so label
  cardinality stays bounded). Scrape every process, as usual.
* from the database at scrape time: trials by state, queue depth, trials created by
  source (engine suggestions, transfer seeds, random fallbacks, user imports), leases
  that expired, active workers. Every process reports the same numbers, because the
  API is stateless and the database is the truth; counting them in one process would
  miss what the others did.

Each app gets its own registry (configuration enters through ``create_app``), so two
apps in one process, as in the tests, never share counters.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hpo_service.api.schemas.admin import LatencyRead
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.services import stats

__all__ = ["Metrics", "MetricsMiddleware", "router"]

log = logging.getLogger(__name__)

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _DatabaseCollector(Collector):
    """Gauges read from the database when Prometheus scrapes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("hpo_database_up", "Whether the last scrape could read the DB.")
        try:
            s = stats.system_stats(self.db, now=utcnow())
        except Exception:  # the database is down: report that, not a 500
            log.warning("metrics: database unavailable", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        by_state = GaugeMetricFamily("hpo_trials", "Trials by state.", labels=["state"])
        for state, n in sorted(s.trials_by_state.items()):
            by_state.add_metric([state], n)
        yield by_state
        by_source = GaugeMetricFamily(
            "hpo_suggestions",
            "Trials created, by who proposed them (engine, transfer_seed, fallback_random, user).",
            labels=["source"],
        )
        for source, n in sorted(s.trials_by_source.items()):
            by_source.add_metric([source], n)
        yield by_source
        yield GaugeMetricFamily(
            "hpo_queue_depth", "Trials queued as requested, waiting for a worker.", s.queue_depth
        )
        yield GaugeMetricFamily(
            "hpo_active_leases", "Trials leased to a worker (active or stopping).", s.active_leases
        )
        yield GaugeMetricFamily(
            "hpo_active_workers", "Distinct workers holding leases.", s.active_workers
        )
        yield GaugeMetricFamily(
            "hpo_lease_expiries",
            "Trials whose latest event was a lease running out (requeued or failed).",
            s.lease_expiries,
        )
        yield GaugeMetricFamily(
            "hpo_overdue_leases", "Leases past expiry not yet reclaimed.", s.overdue_leases
        )


class Metrics:
    """The registry of one app and the instruments the middleware updates."""

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "hpo_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hpo_http_request_duration_seconds",
            "Time from request to the last byte of the response, by route template.",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_DatabaseCollector(db))
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request.

        The labelled series are looked up once per (method, route, status) and kept:
        ``labels()`` validates and stringifies its arguments and takes a lock on every
        call, which was most of this middleware's cost on a heartbeat. Route templates
        keep the number of keys bounded.
        """
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._series[key] = series
        series[0].inc()
        series[1].observe(seconds)

    def latency_summary(self) -> list[LatencyRead]:
        """Count, mean and quantiles (interpolated within buckets) of each route's latency."""
        out = []
        for metric in self.latency.collect():
            series: dict[tuple[str, str], dict[str, list[tuple[float, float]] | float]] = {}
            for sample in metric.samples:
                key = (sample.labels["method"], sample.labels["route"])
                entry = series.setdefault(key, {"buckets": []})
                if sample.name.endswith("_bucket"):
                    bucket_list = entry["buckets"]
                    assert isinstance(bucket_list, list)
                    bucket_list.append((float(sample.labels["le"]), sample.value))
                elif sample.name.endswith("_count"):
                    entry["count"] = sample.value
                elif sample.name.endswith("_sum"):
                    entry["sum"] = sample.value
            for (method, route), entry in sorted(series.items(), key=lambda kv: kv[0][::-1]):
                count = float(entry.get("count", 0.0))  # type: ignore[arg-type]
                buckets = entry["buckets"]
                assert isinstance(buckets, list)
                total = float(entry.get("sum", 0.0))  # type: ignore[arg-type]
                out.append(
                    LatencyRead(
                        route=route,
                        method=method,
                        count=int(count),
                        mean_s=total / count if count else None,
                        p50_s=_bucket_quantile(buckets, count, 0.5),
                        p90_s=_bucket_quantile(buckets, count, 0.9),
                        p99_s=_bucket_quantile(buckets, count, 0.99),
                    )
                )
        return out


def _bucket_quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float | None:
    """Prometheus' ``histogram_quantile``: linear within the bucket holding rank q·count."""
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for upper, cumulative in sorted(buckets):
        if cumulative >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bucket: its bound is all we know
            inside = cumulative - below
            fraction = (rank - below) / inside if inside else 1.0
            return lower + (upper - lower) * fraction
        lower, below = upper, cumulative
    return lower


class MetricsMiddleware:
    """Times every HTTP request and counts it under its route template."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, noting the status it answered and how long the response took."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def observe_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observe_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - start)


router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format; no key needed, and no label names a tenant or study."""
    registry: Metrics = request.app.state.metrics
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
