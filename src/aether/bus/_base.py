"""What both buses share: the router of local subscriptions, subscribe, the lifecycle basics."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from aether.errors import BusClosedError
from aether.event import Event

from ._router import Route, Router, check_buffer_size, check_publish_event, subscription_settings
from .stats import BusMetricsHook
from .subscription import Subscription

__all__ = ["BusBase"]


class BusBase(ABC):
    """The part of a bus that routes events to this process's subscriptions.

    A bus subclasses it and adds ``publish``, ``stats`` and ``aclose``; a bus whose subscriptions
    need setup elsewhere (the NATS bus registers its interest with the server) overrides
    :meth:`_attach` / :meth:`_detach`.
    """

    kind = "base"

    def __init__(self, buffer_size: int, metrics: BusMetricsHook | None) -> None:
        self._buffer_size = check_buffer_size(buffer_size)
        self._router = Router()
        self._routes = self._router.routes
        self._closed = False
        self._metrics = metrics

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    @property
    def subscriptions(self) -> int:
        """Open subscriptions."""
        return len(self._router.subs)

    def subscribe(self, pattern: str, *, event_types: Iterable[str] | None = None, actor_prefix: str | None = None,
                  buffer_size: int | None = None) -> Subscription:
        """Subscribe to the namespaces matching ``pattern``.

        Call it from the event loop of the bus. On a NATS bus, local events reach the subscription
        at once and events of other nodes once the NATS server has registered the interest:
        ``await sub.ready()`` (or ``async with``) waits for that.

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
            raise BusClosedError(f"subscribe on a closed {type(self).__name__}")
        types, prefix, size = subscription_settings(pattern, event_types, actor_prefix, buffer_size,
                                                    self._buffer_size)
        sub = Subscription(pattern, event_types=types, actor_prefix=prefix, buffer_size=size, detach=self._detach,
                           ready=self._ready(pattern))
        self._attach(sub)
        self._router.add(pattern, sub)
        return sub

    def _publish_route(self, namespace: str, event: Event) -> Route:
        """The route of ``namespace`` for publishing ``event`` (both checked; fast when they are good).

        Raises:
            BusClosedError, InvalidNameError, InvalidInputError, InvalidVersionError: as ``publish``.
        """
        if self._closed:
            raise BusClosedError(f"publish on a closed {type(self).__name__}")
        try:
            route = self._routes[namespace]
        except (KeyError, TypeError):
            route = self._router.route(namespace)
        if (type(event) is not Event or type(event.version) is not int or event.version < 1
                or type(event.actor_id) is not str or not event.actor_id):
            check_publish_event(event)
        return route

    def _ready(self, pattern: str) -> asyncio.Future[None] | None:
        """The future a new subscription to ``pattern`` is ready with (None: ready at once)."""
        return None

    def _attach(self, sub: Subscription) -> None:  # noqa: B027  (an optional hook)
        """A new subscription (before it is routed)."""

    def _detach(self, sub: Subscription) -> None:
        """A subscription closed by its owner."""
        self._router.remove(sub)

    @abstractmethod
    async def aclose(self) -> None:
        """Close the bus (each bus documents what that does)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
