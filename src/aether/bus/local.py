"""EventBus: the in-process event bus."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

from aether.errors import BusClosedError
from aether.event import Event

from ._router import DEFAULT_BUFFER_SIZE, Router, check_buffer_size, check_publish_event, fanout, subscription_settings
from .stats import BusMetricsHook, BusStats
from .subscription import Subscription

__all__ = ["EventBus"]


class EventBus:
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
        self._buffer_size = check_buffer_size(buffer_size)
        self._router = Router()
        self._routes = self._router.routes
        self._closed = False
        self._metrics = metrics
        if metrics is not None:
            metrics.attach(self)

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    async def publish(self, namespace: str, event: Event) -> None:
        """Deliver ``event`` to every subscription whose pattern matches ``namespace``.

        Never blocks: a subscription whose buffer is full drops the event and counts it.

        Raises:
            BusClosedError: the bus is closed.
            InvalidNameError: ``namespace`` is not an exact namespace (no wildcards).
            InvalidInputError: ``event`` is not an :class:`~aether.event.Event`.
            InvalidVersionError: ``event.version`` < 1.
        """
        if self._closed:
            raise BusClosedError("publish on a closed EventBus")
        try:
            route = self._routes[namespace]
        except (KeyError, TypeError):
            route = self._router.route(namespace)
        if (type(event) is not Event or type(event.version) is not int or event.version < 1
                or type(event.actor_id) is not str or not event.actor_id):
            check_publish_event(event)
        route.published += 1
        subs = route.subs
        if subs:
            fanout(subs, event, route)

    def subscribe(self, pattern: str, *, event_types: Iterable[str] | None = None, actor_prefix: str | None = None,
                  buffer_size: int | None = None) -> Subscription:
        """Subscribe to the namespaces matching ``pattern``.

        Args:
            pattern: an exact namespace, or one with ``*`` (one token) / final ``>`` (one or
                more tokens) wildcards: ``tenant-a``, ``tenant-a.*``, ``*.orders``, ``tenant-a.>``.
            event_types: only these event types (``None``: all).
            actor_prefix: only actors whose id starts with this prefix.
            buffer_size: this subscription's buffer size (default: the bus's).

        Raises:
            BusClosedError: the bus is closed.
            InvalidNameError: invalid pattern (wildcard inside a token, misplaced ``>``, …).
            InvalidInputError: invalid filters or buffer size.
        """
        if self._closed:
            raise BusClosedError("subscribe on a closed EventBus")
        types, prefix, size = subscription_settings(pattern, event_types, actor_prefix, buffer_size,
                                                    self._buffer_size)
        sub = Subscription(pattern, event_types=types, actor_prefix=prefix, buffer_size=size, detach=self._detach)
        self._router.add(pattern, sub)
        return sub

    def _detach(self, sub: Subscription) -> None:
        self._router.remove(sub)

    def stats(self) -> BusStats:
        """A snapshot of the bus's counters (see :class:`~aether.bus.BusStats`)."""
        return BusStats(kind=self.kind, subscriptions=len(self._router.subs),
                        namespaces=self._router.namespace_stats())

    @property
    def subscriptions(self) -> int:
        """Open subscriptions."""
        return len(self._router.subs)

    async def aclose(self) -> None:
        """Close the bus: further publish/subscribe raise BusClosedError; every subscription's
        iteration ends once its buffered events are read. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._router.end_all()
        if self._metrics is not None:
            self._metrics.detach(self)

    async def __aenter__(self) -> EventBus:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<EventBus {state} subscriptions={len(self._router.subs)}>"
