"""The :class:`EventBroadcaster` protocol both buses implement (and so can third parties)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from aether.event import Event

from .subscription import Subscription

__all__ = ["EventBroadcaster"]


@runtime_checkable
class EventBroadcaster(Protocol):
    """Live notification of events by namespace: publish to an exact namespace, subscribe by pattern.

    The bus is not storage: a subscriber whose buffer is full loses events (counted), and
    nothing published before a subscription existed is replayed.
    """

    async def publish(self, namespace: str, event: Event) -> None:
        """Deliver ``event`` to every subscription whose pattern matches ``namespace``.

        Raises:
            InvalidNameError: ``namespace`` is not an exact namespace (wildcards included).
            InvalidInputError: ``event`` is not an :class:`~aether.event.Event`.
            BusClosedError: the bus is closed.
        """
        ...

    def subscribe(self, pattern: str, *, event_types: Iterable[str] | None = None,
                  actor_prefix: str | None = None) -> Subscription:
        """Subscribe to the namespaces matching ``pattern`` (``*`` one token, ``>`` one or more).

        Raises:
            InvalidNameError: invalid pattern (e.g. a wildcard inside a token).
            InvalidInputError: invalid filters.
            BusClosedError: the bus is closed.
        """
        ...

    async def aclose(self) -> None:
        """Close the bus; every subscription's iteration ends."""
        ...
