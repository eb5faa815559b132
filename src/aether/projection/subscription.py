"""Catch-up subscriptions: everything stored in a namespace's stream, then live events, in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from aether._nats import ERR_STREAM_NOT_FOUND, JetStreamApiError, JsApi, check_client
from aether._nats.consume import Delivery, OrderedConsumer, head_sequence
from aether.errors import InvalidInputError, StoreError
from aether.names import encode_token
from aether.projection._context import StartsAndCloses
from aether.projection._decode import decode_stored
from aether.projection._merge import Merged, partition_positions
from aether.projection.source import EventSource, StoredEvent

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["CatchUpSubscription"]


class CatchUpSubscription(StartsAndCloses):
    """An async iterator of :class:`StoredEvent` over one namespace's stream.

    It yields every event stored after position ``after`` (0 = from the beginning) in stream
    order, then keeps yielding events as they are appended: the switch from stored to live
    events is seamless (one server-side consumer delivers both; nothing is missed or
    repeated). Events of one actor come in version order. Snapshots are never delivered.

    A message in the stream that is not an Aether event makes ``__anext__`` raise
    :class:`~aether.errors.CorruptEventError` (naming its stream and sequence); the
    subscription has moved past it, so iterating again continues with the next event.

    The subscription keeps no state on the server beyond its lifetime and remembers nothing:
    for a durable, named position use :class:`~aether.projection.ProjectionRunner`.

    **Partitioned namespaces** (``source.partitions > 1``): every partition is read (one
    server-side consumer each) and the events are merged: every event once, each actor's
    events in version order, no order across actors of different partitions. Each
    :class:`StoredEvent` names its ``partition``; :attr:`positions` holds one position per
    partition (pass it as ``after`` to resume), :attr:`position` is their sum.

    Args:
        nc: a connected nats-py client (not owned).
        source: the stream(s) to read (:class:`EventSource`).
        after: start after this stream sequence (a saved :attr:`position`); with partitions,
            ``0`` or one position per partition (a saved :attr:`positions`).
        event_types: deliver only events of these types (the position still moves past others).
        actor_prefix: deliver only events of actors whose id starts with this.
        heartbeat: the server-side consumer's idle heartbeat in seconds.
        timeout: seconds to wait for any single server reply.

    Raises:
        InvalidInputError: ``after < 0``, an empty ``actor_prefix`` or bad numbers.
    """

    def __init__(self, nc: Client, source: EventSource, *, after: int | Sequence[int] = 0,
                 event_types: Iterable[str] | None = None, actor_prefix: str | None = None, heartbeat: float = 2.0,
                 timeout: float = 5.0) -> None:
        check_client(nc, "CatchUpSubscription")
        self._merged: Merged | None = None
        self._partition = 0  # the partition this subscription reads (set by a merging parent)
        if source.partitions > 1:
            positions = partition_positions(after, source.partitions)
            children = [CatchUpSubscription(nc, part, after=start, event_types=event_types, actor_prefix=actor_prefix,
                                            heartbeat=heartbeat, timeout=timeout)
                        for part, start in zip(source.parts, positions, strict=True)]
            for index, child in enumerate(children):
                child._partition = index
            self._merged = Merged(children, positions)
            after = 0
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise InvalidInputError("after must be an int >= 0")
        if actor_prefix is not None and (not isinstance(actor_prefix, str) or not actor_prefix):
            raise InvalidInputError("actor_prefix must be a non-empty str or None")
        if not 0.1 <= heartbeat <= 60:
            raise InvalidInputError("heartbeat must be between 0.1 and 60 seconds")
        self.source = source
        self._nc = nc
        self._api = JsApi(nc, timeout=timeout)
        self._types = frozenset(event_types) if event_types is not None else None
        self._subject_filter = source.event_prefix + encode_token(actor_prefix) if actor_prefix else None
        self._prefix_len = len(source.event_prefix)
        self._consumer = OrderedConsumer(nc, self._api, source.stream, source.event_filter, start_after=after,
                                         heartbeat=heartbeat)
        self._position = after
        self._batch: list[Delivery] = []  # taken from the consumer; the next one to look at is _next
        self._next = 0
        self._started = False
        self._closed = False
        self._cleanup: asyncio.Task[None] | None = None

    @property
    def position(self) -> int:
        """The stream sequence of the last message consumed (delivered or passed over); with
        partitions the sum of :attr:`positions`."""
        if self._merged is not None:
            return sum(self._merged.positions)
        return self._position

    @property
    def positions(self) -> tuple[int, ...]:
        """One position per partition: the sequence of the last event delivered from it
        (``(position,)`` without partitions)."""
        if self._merged is not None:
            return tuple(self._merged.positions)
        return (self._position,)

    @property
    def lag(self) -> int:
        """Matching messages stored after :attr:`position` (as last reported by the server)."""
        if self._merged is not None:
            return self._merged.lag
        return self._consumer.lag(self._position)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def start(self) -> None:
        """Create the server-side consumer (done by ``async with`` or the first ``__anext__``).

        Raises:
            StoreError: the stream does not exist.
            StoreUnavailableError / AetherTimeoutError: the server cannot be reached.
        """
        if self._started or self._closed:
            return
        if self._merged is not None:
            await self._merged.start()
            self._started = True
            return
        try:
            await self._consumer.start()
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                raise StoreError(f"stream {self.source.stream!r} does not exist") from exc
            raise
        self._started = True

    async def head(self) -> int:
        """The stream sequence of the newest event stored now (0 if none); with partitions the
        sum of :meth:`heads`.

        Raises:
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        return sum(await self.heads())

    async def heads(self) -> tuple[int, ...]:
        """Per partition, the stream sequence of the newest event stored now (0 if none).

        Raises:
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        if self._merged is not None:
            return tuple(await asyncio.gather(*(child.head() for child in self._merged.children)))
        return (await head_sequence(self._api, self.source.stream, self.source.event_filter),)

    def __aiter__(self) -> CatchUpSubscription:
        return self

    async def __anext__(self) -> StoredEvent:
        if not self._started:
            if self._closed:
                raise StopAsyncIteration
            await self.start()
        if self._merged is not None:
            if self._closed:
                raise StopAsyncIteration
            item = await self._merged.next()
            if item is None or self._closed:
                raise StopAsyncIteration
            return item
        types = self._types
        subject_filter = self._subject_filter
        stream = self.source.stream
        prefix_len = self._prefix_len
        partition = self._partition
        while True:
            if self._closed:
                raise StopAsyncIteration
            batch, i = self._batch, self._next
            if i == len(batch):
                self._batch, self._next = await self._consumer.take(), 0
                continue
            self._next = i + 1
            seq, msg = batch[i]
            self._position = seq
            subject = msg.subject
            if subject_filter is not None and not subject.startswith(subject_filter):
                continue
            event = decode_stored(msg.data, subject, seq, stream, prefix_len)
            if types is not None and event.event_type not in types:
                continue
            return StoredEvent(event, seq, partition)

    def close(self) -> None:
        """End the iteration (synchronous, idempotent); server-side cleanup runs in the background."""
        if self._closed:
            return
        self._closed = True
        if self._merged is not None:
            self._merged.close()
        self._consumer.close()
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to clean up asynchronously
            self._cleanup = asyncio.get_running_loop().create_task(self._aclose_resources())

    async def _aclose_resources(self) -> None:
        if self._merged is not None:
            await self._merged.aclose()
        await self._consumer.aclose()
        await self._api.aclose()

    async def aclose(self) -> None:
        """Close and wait until the server-side consumer and subscriptions are gone."""
        self.close()
        if self._cleanup is not None:
            await self._cleanup

