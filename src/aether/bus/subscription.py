"""Subscription: a bounded, non-blocking stream of events from a bus.

A bus puts each matching event into the subscription's buffer without ever waiting: when the
buffer is full the event is dropped for this subscription only and counted in
:attr:`Subscription.dropped`. The consumer reads with ``async for``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType

from aether.errors import AetherError
from aether.event import Event

__all__ = ["Subscription"]


class Subscription:
    """An async iterator of the events a bus delivers for one ``subscribe()`` call.

    Created by :meth:`EventBus.subscribe <aether.bus.EventBus.subscribe>` and
    :meth:`NATSEventBus.subscribe <aether.bus.NATSEventBus.subscribe>`, never directly.

    * ``async for event in sub`` yields events in arrival order; it ends after :meth:`close`
      (at once, buffered events are discarded) or after the bus is closed (once the events
      already buffered have been read).
    * ``async with bus.subscribe(...) as sub`` waits until the subscription is live (for a
      :class:`~aether.bus.NATSEventBus`: registered on the NATS server) and closes it on exit.
    * The buffer holds at most :attr:`buffer_size` events. A full buffer drops the new event
      (never blocks the publisher) and increments :attr:`dropped`.
    * :attr:`missed` counts events a NATS bus knows were lost in transit for this subscription
      (detected from per-publisher sequence numbers, e.g. across a reconnect).

    Not thread-safe: use it from the event loop thread of its bus.
    """

    __slots__ = (
        "_buf",
        "_closed",
        "_detach",
        "_dropped",
        "_ended",
        "_error",
        "_filtered",
        "_maxsize",
        "_missed",
        "_prefix",
        "_raised",
        "_ready",
        "_types",
        "_waiter",
        "pattern",
    )

    def __init__(self, pattern: str, *, event_types: frozenset[str] | None, actor_prefix: str | None,
                 buffer_size: int, detach: Callable[[Subscription], None] | None = None,
                 ready: asyncio.Future[None] | None = None) -> None:
        self.pattern = pattern
        self._types = event_types
        self._prefix = actor_prefix
        self._filtered = event_types is not None or actor_prefix is not None
        self._maxsize = buffer_size
        self._buf: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._dropped = 0
        self._missed = 0
        self._ended = False
        self._closed = False
        self._error: AetherError | None = None
        self._raised = False
        self._detach = detach
        self._ready = ready

    # ---- read-only state -----------------------------------------------------------------
    @property
    def event_types(self) -> frozenset[str] | None:
        """The event types this subscription accepts (``None``: all)."""
        return self._types

    @property
    def actor_prefix(self) -> str | None:
        """The actor id prefix this subscription accepts (``None``: all actors)."""
        return self._prefix

    @property
    def buffer_size(self) -> int:
        """The most events held before new ones are dropped."""
        return self._maxsize

    @property
    def dropped(self) -> int:
        """Events dropped because the buffer was full."""
        return self._dropped

    @property
    def missed(self) -> int:
        """Events known to have been lost in transit before reaching this node (NATS bus only)."""
        return self._missed

    @property
    def pending(self) -> int:
        """Events buffered and not yet read."""
        return len(self._buf)

    @property
    def closed(self) -> bool:
        """Whether the iteration has ended or will end once the buffer is read."""
        return self._ended

    def drain(self) -> list[Event]:
        """Take every event buffered right now, in arrival order, without waiting (``[]`` if none).

        The same events ``async for`` would yield next; never blocks, never raises.
        """
        events = list(self._buf)
        self._buf.clear()
        return events

    # ---- lifecycle ---------------------------------------------------------------------------
    async def ready(self) -> None:
        """Wait until the subscription receives events from every node.

        A local :class:`~aether.bus.EventBus` subscription is ready at once; a NATS one once
        the NATS server has registered its interest.

        Raises:
            NatsConnectionError / AetherTimeoutError / PermissionDeniedError: the NATS
                subscription could not be set up (the iteration ends with the same error).
        """
        ready = self._ready
        if ready is not None and not ready.done():
            await asyncio.shield(ready)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """End the iteration now and discard buffered events. Synchronous and idempotent."""
        if self._closed:
            return
        self._closed = True
        self._ended = True
        self._buf.clear()
        self._wake()
        detach, self._detach = self._detach, None
        if detach is not None:
            detach(self)

    def _end(self, error: AetherError | None = None) -> None:
        """Called by the bus: no more events will arrive; buffered ones can still be read."""
        if self._ended:
            return
        self._ended = True
        self._error = error
        self._detach = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # ---- iteration ---------------------------------------------------------------------------
    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        buf = self._buf
        while not buf:
            if self._ended:
                error = self._error
                if error is not None and not self._raised:
                    self._raised = True
                    raise error
                raise StopAsyncIteration
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        return buf.popleft()

    async def __aenter__(self) -> Subscription:
        try:
            await self.ready()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._ended else "open"
        return (f"<Subscription {self.pattern!r} {state} pending={len(self._buf)} dropped={self._dropped} "
                f"missed={self._missed}>")
