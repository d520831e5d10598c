"""``spawner.metrics_port``: the spawner's figures in Prometheus' exposition format.

Served by ``prometheus_client``'s HTTP server on a thread of its own, from
what the spawner already knows: the gauges from the snapshot its last tick
published, the counters and histograms ``telemetry`` keeps. What workers
report lives in Redis and is read when Prometheus scrapes, with a client of
the server's own, never on the tick: the reaction times
(``orch:reaction:<host>``) and the apps' figures (``plugins.StatusFigures``
with ``metrics``; the records of other hosts are theirs to export). A Redis
that does not answer leaves those out of the scrape; the rest is served,
with ``orch_redis_up 0``.

Every series carries a ``host`` label (``spawner.host``), so one Grafana
panel tells the hosts apart whatever the scrape config's labels are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import prometheus_client
from loguru import logger
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from orchestrator import codec, keys, plugins
from orchestrator.connections import connect
from orchestrator.telemetry import Histogram, Totals
from orchestrator.worker.reaction import LABELS, LATENCY_BUCKETS_S

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    import redis

    from orchestrator.config import Config
    from orchestrator.status import HostStatus
    from orchestrator.telemetry import Telemetry

# name, help, the QueueStatus attribute
QUEUE_GAUGES = (
    ("orch_queue_backlog", "Entries waiting that no live worker holds", "backlog"),
    ("orch_queue_pending", "Entries delivered to live workers, not yet acknowledged", "pending"),
    ("orch_queue_workers", "Live workers of the queue on this host", "live"),
    ("orch_queue_workers_busy", "Live workers holding entries", "busy"),
    ("orch_queue_workers_max", "The queue's max_concurrent on this host", "max_concurrent"),
    ("orch_queue_dead_letters", "Entries in the queue's dead-letter stream", "dead_letters"),
    ("orch_queue_backoff_seconds", "Seconds until the queue may spawn again", "backoff_s"),
)
BACKOFF_REASONS = {"crash_loop": "crash loop", "tempfail": "dependency unavailable"}


def _family(kind: str, name: str, doc: str, labels: Sequence[str]) -> Any:
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return cls(name, doc, labels=list(labels))


def queue_gauges(host: str, snapshot: HostStatus | None) -> Iterator[Metric]:
    """The snapshot's figures per queue (none before the first tick)."""
    queues = snapshot.queues if snapshot is not None else ()
    for name, doc, attribute in QUEUE_GAUGES:
        family = GaugeMetricFamily(name, doc, labels=["host", "queue"])
        for q in queues:
            family.add_metric([host, q.name], float(getattr(q, attribute)))
        yield family
    oldest = GaugeMetricFamily(
        "orch_queue_oldest_age_seconds",
        "Age of the oldest entry waiting (0: none)",
        labels=["host", "queue"],
    )
    active = GaugeMetricFamily(
        "orch_queue_backoff_active",
        "1 while a backoff holds the queue's spawns back, by reason",
        labels=["host", "queue", "reason"],
    )
    for q in queues:
        oldest.add_metric([host, q.name], q.oldest_age_s or 0.0)
        for reason, text in BACKOFF_REASONS.items():
            active.add_metric([host, q.name, reason], 1.0 if q.backoff_reason == text else 0.0)
    yield oldest
    yield active


def counters(host: str, totals: Totals) -> Iterator[Metric]:
    spawns = CounterMetricFamily("orch_spawns_total", "Workers started", labels=["host", "queue"])
    for queue, n in sorted(totals.spawns.items()):
        spawns.add_metric([host, queue], n)
    exits = CounterMetricFamily(
        "orch_worker_exits_total",
        "Workers gone, by cause (code, signal, max_runtime, memory, stopped, gone) "
        "and status (exit code or signal name)",
        labels=["host", "queue", "cause", "status"],
    )
    for (queue, cause, status), n in sorted(totals.exits.items()):
        exits.add_metric([host, queue, cause, status], n)
    recovered = CounterMetricFamily(
        "orch_recovered_entries_total",
        "Entries of gone workers given back to the queue",
        labels=["host", "queue"],
    )
    dead = CounterMetricFamily(
        "orch_dead_lettered_entries_total",
        "Entries of gone workers dead-lettered after max_attempts",
        labels=["host", "queue"],
    )
    for queue in sorted(set(totals.recovered) | set(totals.dead_lettered)):
        recovered.add_metric([host, queue], totals.recovered.get(queue, 0))
        dead.add_metric([host, queue], totals.dead_lettered.get(queue, 0))
    yield from (spawns, exits, recovered, dead)


def histogram_samples(h: Histogram) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs, ``+Inf`` last."""
    out, running = [], 0
    for bound, n in zip((*h.bounds, math.inf), h.counts, strict=True):
        running += n
        out.append(("+Inf" if bound == math.inf else f"{bound:g}", float(running)))
    return out


def histograms(host: str, totals: Totals) -> Iterator[Metric]:
    recovery = HistogramMetricFamily(
        "orch_recovery_seconds",
        "From a gone worker reaped (or its consumer found dead) to its entries handed on",
        labels=["host", "queue"],
    )
    for queue, h in sorted(totals.recovery.items()):
        recovery.add_metric([host, queue], histogram_samples(h), h.total)
    trip = HistogramMetricFamily(
        "orch_redis_round_trip_seconds", "The spawner tick's Redis round trip", labels=["host"]
    )
    trip.add_metric([host], histogram_samples(totals.round_trip), totals.round_trip.total)
    yield from (recovery, trip)


def reaction_histograms(host: str, raw: Mapping[Any, Any]) -> Metric:
    """``orch:reaction:<host>`` (``<queue>:<le>`` counts, ``<queue>:sum``) as histograms."""
    per_queue: dict[str, Histogram] = {}
    for field, value in raw.items():
        queue, _, label = codec.text(field).rpartition(":")
        h = per_queue.setdefault(queue, Histogram(LATENCY_BUCKETS_S))
        if label == "sum":
            h.total = float(value)
        elif label in LABELS:
            h.counts[LABELS.index(label)] = int(value)
    family = HistogramMetricFamily(
        "orch_reaction_seconds",
        "From a job's XADD (its entry id) to its handler's start, first deliveries",
        labels=["host", "queue"],
    )
    for queue, h in sorted(per_queue.items()):
        family.add_metric([host, queue], histogram_samples(h), h.total)
    return family


def app_metrics(
    host: str, figures: plugins.StatusFigures, records: Iterable[Mapping[str, Any]]
) -> Iterator[Metric]:
    """An app's records as its ``metrics``; records of other hosts are left out."""
    mine = [r for r in records if figures.host_key is None or r.get(figures.host_key) == host]
    for metric in figures.metrics:
        family = _family(metric.kind, metric.name, metric.help, ["host", *figures.labels])
        values: dict[tuple[str, ...], float] = {}
        for record in mine:
            value = record.get(metric.field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                labels = (host, *(str(record.get(k, "")) for k in figures.labels))
                values[labels] = values.get(labels, 0.0) + float(value)
        for labels, value in values.items():
            family.add_metric(list(labels), value)
        yield family


class SpawnerCollector(Collector):
    """Everything ``/metrics`` shows, gathered when it is scraped."""

    def __init__(self, telemetry: Telemetry, client: redis.Redis) -> None:
        self.telemetry = telemetry
        self.host = telemetry.host
        self.client = client

    def collect(self) -> Iterable[Metric]:
        t = self.telemetry
        yield from queue_gauges(self.host, t.latest)
        totals = t.totals()
        yield from counters(self.host, totals)
        yield from histograms(self.host, totals)
        up = GaugeMetricFamily(
            "orch_redis_up", "1 while the spawner reaches Redis", labels=["host"]
        )
        up.add_metric([self.host], 1.0 if t.health is None or t.health.up else 0.0)
        yield up
        yield from self._from_redis()

    def _from_redis(self) -> Iterator[Metric]:
        """What workers report in Redis; nothing of it while Redis fails."""
        try:
            yield reaction_histograms(self.host, self.client.hgetall(keys.reaction(self.host)))
            for figures in plugins.status_figures():
                if figures.metrics:
                    yield from app_metrics(self.host, figures, figures.read(self.client))
        except Exception as exc:  # a scrape must answer, whatever Redis or an app does
            logger.bind(event="metrics_redis").debug(f"metrics: Redis figures left out: {exc}")


class MetricsServer:
    """The exposition server of one spawner."""

    def __init__(self, server: WSGIServer, client: redis.Redis) -> None:
        self.server = server
        self.client = client

    @classmethod
    def start(cls, telemetry: Telemetry, config: Config, port: int) -> MetricsServer:
        """Bind and serve; raises OSError when the port cannot be bound."""
        name = f"orch-metrics:{telemetry.host}"
        client = connect(config.redis_url, timeout_s=2.0, connect_timeout_s=1.0, name=name)
        registry = CollectorRegistry(auto_describe=False)
        collector = SpawnerCollector(telemetry, client)
        list(collector.collect())  # the apps' readers import their modules now, not mid-run
        registry.register(collector)
        prometheus_client.ProcessCollector(registry=registry)
        server, _ = prometheus_client.start_http_server(
            port, addr=config.spawner.metrics_host, registry=registry
        )
        return cls(server, client)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()
