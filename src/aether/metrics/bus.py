"""BusMetrics: Prometheus metrics of the event buses, read from the buses' own counters at scrape time.

The buses count with plain integers on their hot path; this collector turns a
:class:`~aether.bus.BusStats` snapshot of every attached bus into metric families when the
registry is scraped, so enabling bus metrics costs nothing per event::

    metrics = BusMetrics(registry)
    bus = await NATSEventBus.create(nc, metrics=metrics)     # or EventBus(metrics=metrics)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aether.bus.stats import BusStats, BusStatsSource, NamespaceStats

from ._prometheus import prometheus, register, resolve_registry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ["BUS_METRICS", "BusMetrics"]

#: name -> (type, help, NamespaceStats field or None for bus-wide values)
BUS_METRICS: dict[str, tuple[str, str, str | None]] = {
    "aether_bus_published": ("counter", "Events published on this node.", "published"),
    "aether_bus_delivered": ("counter", "Events put into a subscription's buffer (one per subscription).",
                             "delivered"),
    "aether_bus_dropped": ("counter", "Events dropped because a subscription's buffer was full.", "dropped"),
    "aether_bus_missed": ("counter", "Events lost in transit before reaching this node (one per subscription).",
                          "missed"),
    "aether_bus_gaps": ("counter", "Gaps detected in a publisher's sequence.", "gaps"),
    "aether_bus_subscriptions": ("gauge", "Open subscriptions.", None),
    "aether_bus_invalid_messages": ("counter", "Messages on bus subjects that were not valid bus messages.", None),
    "aether_bus_reconnects": ("counter", "Reconnects of the buses' NATS connections.", None),
}

_FIELDS = ("published", "delivered", "dropped", "missed", "gaps")


class BusMetrics:
    """A Prometheus collector reporting every bus attached to it (sums over buses).

    Pass it as ``metrics=`` to :class:`~aether.bus.EventBus` or
    :class:`~aether.bus.NATSEventBus` (or call :meth:`attach`). A closed bus is detached and
    its final counts are kept, so counters never go down.

    ============================================== ======= ============== ===================================
    metric                                         type    labels         meaning
    ============================================== ======= ============== ===================================
    ``aether_bus_published_total``                 counter ``namespace``  events published on this node
    ``aether_bus_delivered_total``                 counter ``namespace``  events buffered for a subscription
    ``aether_bus_dropped_total``                   counter ``namespace``  events dropped: subscription full
    ``aether_bus_missed_total``                    counter ``namespace``  events lost in transit (NATS)
    ``aether_bus_gaps_total``                      counter ``namespace``  sequence gaps detected (NATS)
    ``aether_bus_subscriptions``                   gauge   —              open subscriptions
    ``aether_bus_invalid_messages_total``          counter —              undecodable bus messages (NATS)
    ``aether_bus_reconnects_total``                counter —              NATS reconnects seen by the buses
    ============================================== ======= ============== ===================================

    Args:
        registry: the ``prometheus_client.CollectorRegistry`` to register in (default: the
            global ``prometheus_client.REGISTRY``).

    Raises:
        MetricsUnavailableError: ``prometheus-client`` is not installed.
        InvalidInputError: bus metrics are already registered in ``registry``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._prom = prometheus()
        self.registry = resolve_registry(registry)
        self._lock = threading.Lock()
        self._buses: list[BusStatsSource] = []
        self._retired: dict[str, list[int]] = {}
        self._retired_invalid = 0
        self._retired_reconnects = 0
        register(self.registry, [self])

    # ---- BusMetricsHook -------------------------------------------------------------------
    def attach(self, bus: BusStatsSource) -> None:
        """Report ``bus`` from now on (idempotent)."""
        with self._lock:
            if not any(b is bus for b in self._buses):
                self._buses.append(bus)

    def detach(self, bus: BusStatsSource) -> None:
        """Stop reading ``bus``; its final counts are kept."""
        stats = bus.stats()
        with self._lock:
            for i, attached in enumerate(self._buses):
                if attached is bus:
                    del self._buses[i]
                    break
            else:
                return
            for namespace, ns in stats.namespaces.items():
                totals = self._retired.setdefault(namespace, [0] * len(_FIELDS))
                for j, name in enumerate(_FIELDS):
                    totals[j] += getattr(ns, name)
            self._retired_invalid += stats.invalid_messages
            self._retired_reconnects += stats.reconnects

    def unregister(self) -> None:
        """Remove the collector from its registry."""
        with contextlib.suppress(KeyError):
            self.registry.unregister(self)

    # ---- Prometheus collector ---------------------------------------------------------------
    def _families(self) -> dict[str, Any]:
        core = self._prom.metrics_core
        families: dict[str, Any] = {}
        for name, (kind, doc, field) in BUS_METRICS.items():
            labels = ["namespace"] if field is not None else []
            if kind == "counter":
                families[name] = core.CounterMetricFamily(name, doc, labels=labels)
            else:
                families[name] = core.GaugeMetricFamily(name, doc, labels=labels)
        return families

    def describe(self) -> Iterator[Metric]:
        """The metric families (without samples), so the registry can detect name clashes."""
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        """Snapshot every attached bus and yield the metric families."""
        with self._lock:
            snapshots: list[BusStats] = [bus.stats() for bus in self._buses]
            totals = {ns: list(values) for ns, values in self._retired.items()}
            invalid = self._retired_invalid
            reconnects = self._retired_reconnects
        subscriptions = 0
        for stats in snapshots:
            subscriptions += stats.subscriptions
            invalid += stats.invalid_messages
            reconnects += stats.reconnects
            for namespace, ns in stats.namespaces.items():
                _add(totals.setdefault(namespace, [0] * len(_FIELDS)), ns)
        families = self._families()
        for namespace in sorted(totals):
            values = totals[namespace]
            for j, name in enumerate(_FIELDS):
                families[f"aether_bus_{name}"].add_metric([namespace], values[j])
        families["aether_bus_subscriptions"].add_metric([], subscriptions)
        families["aether_bus_invalid_messages"].add_metric([], invalid)
        families["aether_bus_reconnects"].add_metric([], reconnects)
        yield from families.values()


def _add(totals: list[int], ns: NamespaceStats) -> None:
    totals[0] += ns.published
    totals[1] += ns.delivered
    totals[2] += ns.dropped
    totals[3] += ns.missed
    totals[4] += ns.gaps
