"""StoreMetrics: Prometheus metrics of the event stores (a :class:`~aether.store.observer.StoreObserver`).

Pass one instance to every store that should report into the same registry::

    metrics = StoreMetrics(registry)
    store = await JetStreamEventStore.create(nc, "orders", namespace="tenant-a", observer=metrics)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._prometheus import prometheus, register, resolve_registry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["DEFAULT_LATENCY_BUCKETS", "StoreMetrics"]

#: Latency histogram buckets in seconds: 100 µs … 10 s (appends on a local server take ~0.1-1 ms).
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class _Children:
    """The label-bound metric children of one namespace (looked up once, then reused)."""

    __slots__ = (
        "append_seconds",
        "appended",
        "appends",
        "cache_hits",
        "cache_misses",
        "conflicts",
        "read_events",
        "read_seconds",
        "reads",
    )

    def __init__(self, metrics: StoreMetrics, namespace: str) -> None:
        self.appends = metrics.appends.labels(namespace)
        self.appended = metrics.appended_events.labels(namespace)
        self.append_seconds = metrics.append_seconds.labels(namespace)
        self.conflicts = metrics.conflicts.labels(namespace)
        self.cache_hits = metrics.cache_hits.labels(namespace)
        self.cache_misses = metrics.cache_misses.labels(namespace)
        self.reads = metrics.reads.labels(namespace)
        self.read_events = metrics.read_events.labels(namespace)
        self.read_seconds = metrics.read_seconds.labels(namespace)


class StoreMetrics:
    """Counts and times what the stores do, per namespace (label ``namespace``, ``""`` when none).

    Metrics (all labelled by ``namespace``):

    ============================================ ========= ===========================================
    ``aether_store_appends_total``               counter   successful append calls
    ``aether_store_appended_events_total``       counter   events appended
    ``aether_store_append_seconds``              histogram latency of successful append calls
    ``aether_store_conflicts_total``             counter   appends rejected with a version conflict
    ``aether_store_cache_hits_total``            counter   appends whose actor was in the version cache
    ``aether_store_cache_misses_total``          counter   appends whose actor was not cached
    ``aether_store_reads_total``                 counter   history reads (``get_events``)
    ``aether_store_events_read_total``           counter   events returned by history reads
    ``aether_store_read_seconds``                histogram latency of history reads
    ============================================ ========= ===========================================

    Args:
        registry: the ``prometheus_client.CollectorRegistry`` to register in (default: the
            global ``prometheus_client.REGISTRY``).
        buckets: latency histogram buckets in seconds.

    Raises:
        MetricsUnavailableError: ``prometheus-client`` is not installed.
        InvalidInputError: these metrics are already registered in ``registry`` (share one
            StoreMetrics between stores instead).
    """

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS) -> None:
        prom = prometheus()
        self.registry = resolve_registry(registry)
        labels = ["namespace"]

        def counter(name: str, doc: str) -> Any:
            return prom.Counter(name, doc, labels, registry=None)

        def histogram(name: str, doc: str) -> Any:
            return prom.Histogram(name, doc, labels, registry=None, buckets=tuple(buckets))

        self.appends = counter("aether_store_appends_total", "Successful append calls.")
        self.appended_events = counter("aether_store_appended_events_total", "Events appended.")
        self.append_seconds = histogram("aether_store_append_seconds", "Latency of successful append calls.")
        self.conflicts = counter("aether_store_conflicts_total", "Appends rejected with a version conflict.")
        self.cache_hits = counter("aether_store_cache_hits_total", "Appends whose actor was in the version cache.")
        self.cache_misses = counter("aether_store_cache_misses_total",
                                    "Appends whose actor was not in the version cache.")
        self.reads = counter("aether_store_reads_total", "History reads.")
        self.read_events = counter("aether_store_events_read_total", "Events returned by history reads.")
        self.read_seconds = histogram("aether_store_read_seconds", "Latency of history reads.")
        register(self.registry, [self.appends, self.appended_events, self.append_seconds, self.conflicts,
                                 self.cache_hits, self.cache_misses, self.reads, self.read_events,
                                 self.read_seconds])
        self._children: dict[str, _Children] = {}

    def _for(self, namespace: str) -> _Children:
        children = self._children.get(namespace)
        if children is None:
            children = self._children[namespace] = _Children(self, namespace)
        return children

    # ---- StoreObserver --------------------------------------------------------------------
    def on_append(self, namespace: str, events: int, seconds: float) -> None:
        """``events`` events were appended in one call that took ``seconds``."""
        children = self._children.get(namespace) or self._for(namespace)
        children.appends.inc()
        children.appended.inc(events)
        children.append_seconds.observe(seconds)

    def on_conflict(self, namespace: str) -> None:
        """An append was rejected with a version conflict."""
        (self._children.get(namespace) or self._for(namespace)).conflicts.inc()

    def on_cache(self, namespace: str, hit: bool) -> None:
        """The version cache was consulted for an append."""
        children = self._children.get(namespace) or self._for(namespace)
        (children.cache_hits if hit else children.cache_misses).inc()

    def on_read(self, namespace: str, events: int, seconds: float) -> None:
        """A history read returned ``events`` events in ``seconds``."""
        children = self._children.get(namespace) or self._for(namespace)
        children.reads.inc()
        children.read_events.inc(events)
        children.read_seconds.observe(seconds)

    def unregister(self) -> None:
        """Remove these metrics from their registry."""
        for collector in (self.appends, self.appended_events, self.append_seconds, self.conflicts,
                          self.cache_hits, self.cache_misses, self.reads, self.read_events, self.read_seconds):
            with contextlib.suppress(KeyError):
                self.registry.unregister(collector)
