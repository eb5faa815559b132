"""EventBus: the in-process event bus."""

from __future__ import annotations

from aether.event import Event

from ._base import BusBase
from ._router import DEFAULT_BUFFER_SIZE, fanout
from .stats import BusMetricsHook, BusStats

__all__ = ["EventBus"]


class EventBus(BusBase):
    """Publish/subscribe of events inside one process (implements :class:`~aether.bus.EventBroadcaster`).

    ``publish`` puts the event into the buffer of every matching subscription and returns
    without waiting for any reader; a full buffer drops the event for that subscription only.
    Events from one publisher reach each subscription in publish order.

    Args:
        buffer_size: default buffer size of new subscriptions (events).
        metrics: optional :class:`aether.metrics.BusMetrics` (or any
            :class:`~aether.bus.BusMetricsHook`) that reports this bus.

    Raises:
        InvalidInputError: ``buffer_size`` is not an int >= 1.
    """

    kind = "local"

    def __init__(self, *, buffer_size: int = DEFAULT_BUFFER_SIZE, metrics: BusMetricsHook | None = None) -> None:
        super().__init__(buffer_size, metrics)
        if metrics is not None:
            metrics.attach(self)

    async def publish(self, namespace: str, event: Event) -> None:
        """Deliver ``event`` to every subscription whose pattern matches ``namespace``.

        Never blocks: a subscription whose buffer is full drops the event and counts it.

        Raises:
            BusClosedError: the bus is closed.
            InvalidNameError: ``namespace`` is not an exact namespace (no wildcards).
            InvalidInputError: ``event`` is not an :class:`~aether.event.Event`.
            InvalidVersionError: ``event.version`` < 1.
        """
        route = self._publish_route(namespace, event)
        route.published += 1
        subs = route.subs
        if subs:
            fanout(subs, event, route)

    def stats(self) -> BusStats:
        """A snapshot of the bus's counters (see :class:`~aether.bus.BusStats`)."""
        return BusStats(kind=self.kind, subscriptions=len(self._router.subs),
                        namespaces=self._router.namespace_stats())

    async def aclose(self) -> None:
        """Close the bus: further publish/subscribe raise BusClosedError; every subscription's
        iteration ends once its buffered events are read. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._router.end_all()
        if self._metrics is not None:
            self._metrics.detach(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<EventBus {state} subscriptions={len(self._router.subs)}>"
