"""Counters a bus keeps and the hook through which metrics read them.

A bus counts with plain integers on its hot path (no locks, no metric objects); a metrics
collector such as :class:`aether.metrics.BusMetrics` reads a :class:`BusStats` snapshot when
it is scraped. Counts are per namespace; deliveries, drops and misses are counted once per
subscription they concern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["BusMetricsHook", "BusStats", "BusStatsSource", "NamespaceStats"]


@dataclass(frozen=True, slots=True)
class NamespaceStats:
    """What a bus did in one namespace since it was created.

    Attributes:
        published: events published on this bus (this node) in the namespace.
        delivered: events put into a subscription's buffer (one per subscription).
        dropped: events dropped because a subscription's buffer was full (one per subscription).
        missed: events lost in transit before reaching this node (one per subscription), NATS only.
        gaps: times a gap in a publisher's sequence was detected, NATS only.
    """

    published: int = 0
    delivered: int = 0
    dropped: int = 0
    missed: int = 0
    gaps: int = 0


@dataclass(frozen=True, slots=True)
class BusStats:
    """A snapshot of a bus's counters.

    Attributes:
        kind: ``"local"`` or ``"nats"``.
        subscriptions: open subscriptions.
        namespaces: per-namespace counters.
        invalid_messages: NATS messages on the bus subjects that were not valid bus messages.
        reconnects: reconnects of the bus's NATS connection since the bus was created.
    """

    kind: str
    subscriptions: int = 0
    namespaces: dict[str, NamespaceStats] = field(default_factory=dict)
    invalid_messages: int = 0
    reconnects: int = 0

    def total(self, counter: str) -> int:
        """The sum of one :class:`NamespaceStats` counter (``"dropped"``, …) over all namespaces."""
        return sum(getattr(ns, counter) for ns in self.namespaces.values())


class BusStatsSource(Protocol):
    """Anything that can report :class:`BusStats` (both buses do)."""

    def stats(self) -> BusStats:
        """A consistent snapshot of the counters."""
        ...


class BusMetricsHook(Protocol):
    """What a bus's ``metrics=`` argument must offer (implemented by :class:`aether.metrics.BusMetrics`).

    The bus calls :meth:`attach` when it is created and :meth:`detach` when it is closed;
    both must be cheap and must never raise.
    """

    def attach(self, bus: BusStatsSource) -> None:
        """Start reporting ``bus``."""
        ...

    def detach(self, bus: BusStatsSource) -> None:
        """Stop reading ``bus``, keeping its final counts (counters never go down)."""
        ...
