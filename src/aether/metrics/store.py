"""StoreMetrics: Prometheus metrics of the event stores (a :class:`~aether.store.observer.StoreObserver`).

Pass one instance to every store that should report into the same registry::

    metrics = StoreMetrics(registry)
    store = await JetStreamEventStore.create(nc, "orders", namespace="tenant-a", observer=metrics)
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from ._prometheus import prometheus, register, resolve_registry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["DEFAULT_LATENCY_BUCKETS", "StoreMetrics"]

#: Latency histogram buckets in seconds: 100 µs … 10 s (appends on a local server take ~0.1-1 ms).
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class _Namespace:
    """Plain counters of one namespace, updated on the hot path, read when Prometheus scrapes."""

    __slots__ = ("append_buckets", "append_sum", "appended", "appends", "cache_hits", "cache_misses",
                 "conflicts", "read_buckets", "read_events", "read_sum", "reads")

    def __init__(self, buckets: int) -> None:
        self.appends = self.appended = self.conflicts = self.cache_hits = self.cache_misses = 0
        self.reads = self.read_events = 0
        self.append_sum = self.read_sum = 0.0
        self.append_buckets = [0] * (buckets + 1)  # the last slot is +Inf
        self.read_buckets = [0] * (buckets + 1)


_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("aether_store_appends", "Successful append calls.", "appends"),
    ("aether_store_appended_events", "Events appended.", "appended"),
    ("aether_store_conflicts", "Appends rejected with a version conflict.", "conflicts"),
    ("aether_store_cache_hits", "Appends whose actor was in the version cache.", "cache_hits"),
    ("aether_store_cache_misses", "Appends whose actor was not in the version cache.", "cache_misses"),
    ("aether_store_reads", "History reads.", "reads"),
    ("aether_store_events_read", "Events returned by history reads.", "read_events"),
)
_HISTOGRAMS: tuple[tuple[str, str, str, str], ...] = (
    ("aether_store_append_seconds", "Latency of successful append calls.", "append_buckets", "append_sum"),
    ("aether_store_read_seconds", "Latency of history reads.", "read_buckets", "read_sum"),
)


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

    The hot path only increments plain integers (no locks, no label lookups); the values are
    turned into metric families when the registry is scraped. Increments happen on the event
    loop's thread; a scrape from the HTTP thread reads them as they are at that moment.

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
        self._prom = prometheus()
        self.registry = resolve_registry(registry)
        self._buckets = tuple(sorted(float(b) for b in buckets))
        self._stats: dict[str, _Namespace] = {}
        register(self.registry, [self])

    def _for(self, namespace: str) -> _Namespace:
        stats = self._stats.get(namespace)
        if stats is None:
            stats = self._stats[namespace] = _Namespace(len(self._buckets))
        return stats

    # ---- StoreObserver --------------------------------------------------------------------
    def on_append(self, namespace: str, events: int, seconds: float) -> None:
        """``events`` events were appended in one call that took ``seconds``."""
        stats = self._stats.get(namespace) or self._for(namespace)
        stats.appends += 1
        stats.appended += events
        stats.append_sum += seconds
        stats.append_buckets[bisect_left(self._buckets, seconds)] += 1

    def on_conflict(self, namespace: str) -> None:
        """An append was rejected with a version conflict."""
        (self._stats.get(namespace) or self._for(namespace)).conflicts += 1

    def on_cache(self, namespace: str, hit: bool) -> None:
        """The version cache was consulted for an append."""
        stats = self._stats.get(namespace) or self._for(namespace)
        if hit:
            stats.cache_hits += 1
        else:
            stats.cache_misses += 1

    def on_read(self, namespace: str, events: int, seconds: float) -> None:
        """A history read returned ``events`` events in ``seconds``."""
        stats = self._stats.get(namespace) or self._for(namespace)
        stats.reads += 1
        stats.read_events += events
        stats.read_sum += seconds
        stats.read_buckets[bisect_left(self._buckets, seconds)] += 1

    # ---- Prometheus collector ---------------------------------------------------------------
    def _families(self) -> list[Any]:
        core = self._prom.metrics_core
        families: list[Any] = [core.CounterMetricFamily(name, doc, labels=["namespace"])
                               for name, doc, _ in _COUNTERS]
        families += [core.HistogramMetricFamily(name, doc, labels=["namespace"]) for name, doc, _, _ in _HISTOGRAMS]
        return families

    def describe(self) -> Iterator[Any]:
        """The metric families (without samples), so the registry can detect name clashes."""
        yield from self._families()

    def collect(self) -> Iterator[Any]:
        """The current values as metric families."""
        families = self._families()
        bounds = [*(str(b) for b in self._buckets), "+Inf"]
        for namespace, stats in list(self._stats.items()):
            for family, (_, _, field) in zip(families, _COUNTERS, strict=False):
                family.add_metric([namespace], getattr(stats, field))
            for family, (_, _, buckets_field, sum_field) in zip(families[len(_COUNTERS):], _HISTOGRAMS, strict=True):
                cumulative = list(accumulate(getattr(stats, buckets_field)))
                family.add_metric([namespace], list(zip(bounds, cumulative, strict=True)), getattr(stats, sum_field))
        yield from families

    def unregister(self) -> None:
        """Remove these metrics from their registry."""
        with contextlib.suppress(KeyError):
            self.registry.unregister(self)
