"""`/metrics` for Prometheus: gauges computed from the database at scrape time (so every
web process reports the same truth) and the counters every process keeps in Redis
(cleanup.metrics). Needs `Authorization: Bearer <METRICS_TOKEN>`; off (404) while unset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from cleanup.metrics import preview_start_counts, stop_counts, sweep_counts
from cleanup.stats import stats_now
from kosuke.bearer import bearer_matches

logger = logging.getLogger(__name__)


def _gauge(name: str, documentation: str, labels: list[str], values: dict) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=labels)
    for label_values, value in values.items():
        gauge.add_metric(label_values if isinstance(label_values, tuple) else [label_values], value)
    return gauge


class CleanupCollector:
    """Everything `/metrics` reports, read when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        now = stats_now()
        previews = now["previews"]
        yield _gauge("kosuke_previews", "Previews by state.", ["state"], previews["by_state"])
        yield _gauge(
            "kosuke_previews_running_by_level",
            "Running previews by activity level of their session.",
            ["level"],
            previews["running_by_level"],
        )
        yield GaugeMetricFamily(
            "kosuke_previews_overdue",
            "Running previews past their inactivity threshold now.",
            value=previews["overdue"],
        )
        yield GaugeMetricFamily(
            "kosuke_previews_overdue_seconds",
            "Seconds the running previews are past their threshold now, summed.",
            value=previews["overdue_hours"] * 3600,
        )
        yield GaugeMetricFamily(
            "kosuke_cleanup_stops_pending",
            "Stop decisions handed out and not settled yet.",
            value=now["stops_pending"],
        )
        yield GaugeMetricFamily(
            "kosuke_cleanup_paused",
            "1 while scheduled cleanup is paused.",
            value=bool(now["paused"]),
        )
        engines = now["engines"]
        yield _gauge(
            "kosuke_engine_up",
            "1 when the workers' latest report on the Docker engine is fresh and good.",
            ["engine"],
            {e["engine"]: e["reachable"] for e in engines},
        )
        yield _gauge(
            "kosuke_engine_containers_running",
            "Preview containers running on the engine, as the last sweep listed them.",
            ["engine"],
            {e["engine"]: e["containers_running"] or 0 for e in engines},
        )
        yield _gauge(
            "kosuke_engine_previews_running",
            "Previews not stopped on the engine, as the database says.",
            ["engine"],
            {e["engine"]: e["previews_running"] for e in engines},
        )
        yield _gauge(
            "kosuke_engine_capacity",
            "Previews the engine runs at most (PREVIEW_ENGINES); new ones go where most is free.",
            ["engine"],
            {e["engine"]: e["capacity"] for e in engines if e["capacity"] is not None},
        )
        last = now["last_sweep"]
        if last:
            yield GaugeMetricFamily(
                "kosuke_cleanup_last_sweep_timestamp_seconds",
                "When the last sweep started (Unix time).",
                value=last["started_at"].timestamp(),
            )
        yield from self._counters()

    def _counters(self) -> Iterator[Metric]:
        try:
            stop_numbers, sweeps, starts = stop_counts(), sweep_counts(), preview_start_counts()
        except redis.RedisError as exc:  # the gauges from the database still go out
            logger.warning("metrics: counters unavailable: %s", exc)
            return
        stops = CounterMetricFamily(
            "kosuke_cleanup_stops",
            "Stop decisions settled, by outcome and reason.",
            labels=["outcome", "reason"],
        )
        for (outcome, reason), n in sorted(stop_numbers.items()):
            stops.add_metric([outcome, reason], n)
        yield stops
        yield HistogramMetricFamily(
            "kosuke_cleanup_sweep_duration_seconds",
            "Time a sweep took to decide and hand out its stops.",
            buckets=sweeps["buckets"],
            sum_value=sweeps["seconds"],
        )
        yield CounterMetricFamily(
            "kosuke_cleanup_sweeps_skipped",
            "Sweeps that did nothing because another sweep was running.",
            value=sweeps["skipped"],
        )
        started = CounterMetricFamily(
            "kosuke_preview_starts",
            "Previews opened: containers created, or stopped ones started again, by engine.",
            labels=["kind", "engine"],
        )
        for (kind, engine), n in sorted(starts.items()):
            started.add_metric([kind, engine], n)
        yield started


registry = CollectorRegistry(auto_describe=False)
registry.register(CleanupCollector())


def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        raise Http404("metrics are off: METRICS_TOKEN is not set")
    if not bearer_matches(request, settings.METRICS_TOKEN):
        response = HttpResponse("a wrong or missing metrics token\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
