"""NATSEventBus: the event bus across processes and machines, on core NATS.

Every bus instance is a *node* with a random 8-byte id. ``publish`` sends the event once on
its subject (see :mod:`aether.bus.wire` for the layout) and delivers it to the node's own
matching subscriptions directly.

Coalescing: nats-py costs several µs per message, more than everything else the bus does
with an event. The first event a node publishes in an event-loop iteration goes out at once,
alone (an idle publisher's latency is that of one plain NATS message). Further events
published in the same iteration collect in ONE open batch while they share its subject
(namespace and event type), and the batch travels as one NATS message when the iteration
ends (a callback scheduled by the first publish with ``loop.call_soon`` starts a task that
sends it), when it is full (``max_batch_events`` events or ``max_batch_bytes`` bytes, never
above the server's max payload), or when a publish to another subject needs to go out after
it. Messages leave in publish order, so every guarantee below holds per event.

Each distinct subscription pattern on a node owns ONE NATS subscription (a *group*) and
hands what it receives to that pattern's local subscriptions only, so a subscription gets
every remote event exactly once even when several patterns overlap; messages carrying the
node's own id are skipped (they were delivered locally).

Order: NATS keeps the order of one connection's messages per subscription, and local
delivery happens in publish order, so events of one publisher reach each subscription in
publish order. Loss: core NATS is at-most-once; a receiver numbers each publisher's events
per namespace and reports every jump (``missed`` on the subscription, ``gaps`` / ``missed``
in the stats and metrics) instead of hiding it. nats-py re-subscribes after a reconnect, so
subscriptions keep working after a server restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from aether import tracing as _tracing
from aether._nats import (
    BUS_ERRORS,
    NOT_SENT_ERRORS,
    Inbox,
    check_client,
    is_payload_too_large,
    translate_nats_error,
    watch_permission_denials,
)
from aether.codec import EVENT_FORMAT_V1, decode_event, encode_event
from aether.errors import (
    AetherError,
    CorruptEventError,
    EventTooLargeError,
    InvalidInputError,
    NatsConnectionError,
    PermissionDeniedError,
)
from aether.event import Event

from ._base import BusBase
from ._router import DEFAULT_BUFFER_SIZE, Route, fanout, fanout_all
from .stats import BusMetricsHook, BusStats
from .subscription import Subscription
from .wire import (
    BATCH,
    BATCH_OVERHEAD,
    DEFAULT_SUBJECT_PREFIX,
    HEADER_SIZE,
    MAGIC,
    ORIGIN,
    SINGLE,
    TRACED_BATCH,
    check_bus_prefix,
    context_size,
    decode_batch,
    event_subject,
    namespace_of_subject,
    pack_batch,
    pack_header,
    pattern_subject,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["NATSEventBus"]

_MAX_SUBJECT_CACHE = 65_536
_MAX_TYPES_PER_ROUTE = 1024
_MAX_PUBLISHERS = 4096
_unpack_origin = ORIGIN.unpack_from
DEFAULT_MAX_BATCH_EVENTS = 256
DEFAULT_MAX_BATCH_BYTES = 64 * 1024
_MAX_BATCH_EVENTS_LIMIT = 65_535
_FORMAT_V1 = EVENT_FORMAT_V1[1]  # the codec's format byte: only format-1 events travel in batches (wire v2)


class _Batch:
    """Events of one subject published in one loop iteration, waiting to travel as one message."""

    __slots__ = ("contexts", "first", "limit", "payloads", "route", "size", "subject")

    def __init__(self, route: Route, subject: str, first: int, payload: bytes, context: dict[str, str] | None,
                 limit: int) -> None:
        self.route = route
        self.subject = subject
        self.first = first
        self.limit = limit
        self.payloads = [payload]
        self.contexts: list[dict[str, str]] | None = None
        self.size = BATCH_OVERHEAD + len(payload)
        if context:
            self.contexts = [context]
            self.size += context_size(context)

_PROBE = "the bus's probe through its own inbox"


def _translate(exc: BaseException, what: str) -> AetherError:
    """The AetherError a bus operation raises for ``exc`` (the adapter's table, the bus's classes)."""
    return translate_nats_error(exc, what, BUS_ERRORS)


class _Group:
    """One NATS subscription shared by the local subscriptions of one pattern."""

    __slots__ = ("bus", "denied", "error", "nats_sub", "node", "own", "pattern", "ready", "seen", "stopping", "subject",
                 "subject_routes", "subs", "task")

    def __init__(self, bus: NATSEventBus, pattern: str, subject: str, ready: asyncio.Future[None]) -> None:
        self.bus = bus
        self.pattern = pattern
        self.subject = subject
        self.ready = ready
        self.subs: tuple[Subscription, ...] = ()
        self.nats_sub: Any = None
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.error: AetherError | None = None
        self.denied: PermissionDeniedError | None = None
        self.own = bus._head
        self.node = bus._node
        self.subject_routes = bus._subject_routes
        # publisher node id -> {route: last sequence seen}
        self.seen: dict[bytes, dict[Route, int]] = {}

    async def start(self) -> None:
        bus = self.bus
        nc = bus._nc
        try:
            try:
                self.nats_sub = await nc.subscribe(self.subject, cb=self.on_msg)
            except Exception as exc:
                raise _translate(exc, f"subscribing to {self.pattern!r}") from exc
            while not self.stopping:  # wait until the server has registered the interest
                try:
                    await bus._roundtrip(bus._timeout)
                    break
                except Exception as exc:
                    if nc.is_closed or isinstance(exc, PermissionDeniedError):
                        raise _translate(exc, f"subscribing to {self.pattern!r}") from exc
                    await asyncio.sleep(0.05)  # reconnecting: try again
            if self.denied is not None:  # the server refused the subscription before the probe came back
                sub, self.nats_sub = self.nats_sub, None
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
                raise self.denied
        except AetherError as exc:
            self.error = exc
            bus._group_failed(self, exc)
        finally:
            if not self.ready.done():
                self.ready.set_result(None)

    def refuse(self, error: PermissionDeniedError) -> None:
        """The server refused this subscription: end the local subscriptions with ``error``."""
        if not self.ready.done():
            self.denied = error  # start() raises it once its probe confirms the server has answered
        elif self.error is None:  # refused later (e.g. re-subscribing after a reconnect)
            self.error = error
            self.bus._group_failed(self, error)
            self.bus._spawn(self.stop())

    async def stop(self) -> None:
        self.stopping = True
        task = self.task
        if task is not None and not task.done():
            await asyncio.wait([task])
        sub, self.nats_sub = self.nats_sub, None
        if sub is not None and not self.bus._nc.is_closed:
            with contextlib.suppress(Exception):  # the connection went away: nothing left to release
                await sub.unsubscribe()

    async def on_msg(self, msg: Msg) -> None:
        """Hot path: skip own messages, check the sequence range, decode once, fan out."""
        data = msg.data
        if data.startswith(self.own):
            return
        if len(data) <= HEADER_SIZE or data[0] != 0xAE:
            self.bus._invalid += 1
            return
        kind = data[1]
        if kind != SINGLE and kind != BATCH and kind != TRACED_BATCH:
            self.bus._invalid += 1
            return
        route = self.subject_routes.get(msg.subject)
        if route is None:
            route = self.bus._route_of_subject(msg.subject)
            if route is None:
                self.bus._invalid += 1
                return
        node, seq = _unpack_origin(data, 2)
        if node == self.node:
            return  # a batch this node sent (its own v1 messages were skipped above)
        if kind == SINGLE:
            try:
                event = decode_event(data[HEADER_SIZE:])
            except CorruptEventError:
                self.bus._invalid += 1
                return
            if self._admit(node, route, seq, seq) < 0:
                return
            subs = self.subs
            if subs:
                fanout(subs, event, route)
            if _tracing.TRACER is not None:
                _tracing.bus_deliver(msg.headers, msg.subject, event, len(subs))
            return
        try:
            events, contexts = decode_batch(data, kind)
        except CorruptEventError:
            self.bus._invalid += 1
            return
        skip = self._admit(node, route, seq, seq + len(events) - 1)
        if skip:
            if skip < 0:
                return
            events = events[skip:]
            if contexts is not None:
                contexts = contexts[skip:]
        subs = self.subs
        if subs:
            fanout_all(subs, events, route)
        if _tracing.TRACER is not None and (contexts is not None or not _tracing._off()):
            count = len(subs)
            subject = msg.subject
            for i, event in enumerate(events):
                _tracing.bus_deliver(contexts[i] if contexts is not None else None, subject, event, count)

    def _admit(self, node: bytes, route: Route, first: int, last: int) -> int:
        """Record that ``node`` sent sequences ``first..last`` in ``route``.

        Returns how many leading events of the range were handled already (0 normally), or -1
        when all were (a copy). A jump past the last sequence seen is a gap (counted).
        """
        seen = self.seen.get(node)
        if seen is None:
            seen = self._new_publisher(node)
        prev = seen.get(route, 0)
        skip = 0
        if prev and first != prev + 1:
            if last <= prev:
                return -1  # a copy of a message already handled
            if first > prev:
                self._gap(route, first - prev - 1)
            else:
                skip = prev + 1 - first
        seen[route] = last
        return skip

    def _new_publisher(self, node: bytes) -> dict[Route, int]:
        seen = self.seen
        if len(seen) >= _MAX_PUBLISHERS:
            del seen[next(iter(seen))]
        entry: dict[Route, int] = {}
        seen[node] = entry
        return entry

    def _gap(self, route: Route, missed: int) -> None:
        route.gaps += 1
        for sub in self.subs:
            sub._missed += missed
        route.missed += missed * len(self.subs)


class NATSEventBus(BusBase):
    """Event bus across processes and machines (implements :class:`~aether.bus.EventBroadcaster`).

    Create it with ``await NATSEventBus.create(nc)``; the constructor does no I/O. The bus
    never closes the nats-py client it was given. Guarantees (see the module docstring and
    ``docs/bus.md``): every subscription receives each matching event published on any node
    once (no echo copies of the node's own events); per-publisher order; subscriptions
    survive reconnects; events lost in transit are counted, never hidden.

    Args:
        nc: a connected nats-py client.
        subject_prefix: first subject token(s) of bus messages (default ``aetherbus``).
        buffer_size: default buffer size of new subscriptions (events).
        timeout: seconds to wait for the server when registering a subscription.
        metrics: optional :class:`aether.metrics.BusMetrics` (or any
            :class:`~aether.bus.BusMetricsHook`) that reports this bus.
        max_batch_events: the most events one NATS message carries (1: no coalescing).
        max_batch_bytes: the most bytes one coalesced NATS message carries (never more than
            the server's max payload).

    Raises:
        InvalidNameError: invalid ``subject_prefix``.
        InvalidInputError: invalid ``buffer_size``, ``timeout``, ``max_batch_events`` (an int
            1..65535) or ``max_batch_bytes`` (an int >= 1024).
    """

    kind = "nats"

    def __init__(self, nc: Client, *, subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
                 buffer_size: int = DEFAULT_BUFFER_SIZE, timeout: float = 5.0,
                 metrics: BusMetricsHook | None = None, max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
                 max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> None:
        check_client(nc, "NATSEventBus")
        self._prefix = check_bus_prefix(subject_prefix)
        super().__init__(buffer_size, metrics)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise InvalidInputError(f"timeout must be > 0, got {timeout!r}")
        if type(max_batch_events) is not int or not 1 <= max_batch_events <= _MAX_BATCH_EVENTS_LIMIT:
            raise InvalidInputError(f"max_batch_events must be an int in 1..{_MAX_BATCH_EVENTS_LIMIT}, "
                                    f"got {max_batch_events!r}")
        if type(max_batch_bytes) is not int or max_batch_bytes < 1024:
            raise InvalidInputError(f"max_batch_bytes must be an int >= 1024, got {max_batch_bytes!r}")
        self._timeout = float(timeout)
        self._max_batch_events = max_batch_events
        self._max_batch_bytes = max_batch_bytes
        self._batch: _Batch | None = None  # the open batch (at most one: messages leave in publish order)
        self._busy = False  # a publish of this loop iteration went out: further ones coalesce
        self._end_pending = False  # the end-of-iteration callback is scheduled
        self._sender: asyncio.Task[None] | None = None  # sends the open batch after an iteration
        self._send_failure: AetherError | None = None  # a coalesced message that could not be sent
        self._unflushed = False  # handed messages to nats-py since the last round trip (aclose flushes them)
        self._nc = nc
        self._node = os.urandom(8)
        self._head = MAGIC + self._node
        self._subject_routes: dict[str, Route] = {}
        self._groups: dict[str, _Group] = {}
        self._sub_groups: dict[Subscription, _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._invalid = 0
        self._inbox = Inbox.of(nc)  # the connection's reply inbox: the bus's probes come back through it
        self._inbox.hold()
        self._inbox_held = True
        self._refused_subjects: dict[str, str] = {}  # lower-cased bus subjects the server refused
        self._refusal: PermissionDeniedError | None = None  # a refused publish flush() has not reported
        watch_permission_denials(nc, self)
        self._reconnects_at_start = int(nc.stats.get("reconnects", 0)) if hasattr(nc, "stats") else 0
        if metrics is not None:
            metrics.attach(self)

    @classmethod
    async def create(cls, nc: Client, *, subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
                     buffer_size: int = DEFAULT_BUFFER_SIZE, timeout: float = 5.0,
                     metrics: BusMetricsHook | None = None, max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
                     max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> NATSEventBus:
        """Create a bus on a connected nats-py client (arguments: see the class).

        Raises:
            NatsConnectionError: the client is closed.
            InvalidNameError / InvalidInputError: invalid arguments.
        """
        check_client(nc, "NATSEventBus.create")
        if nc.is_closed:
            raise NatsConnectionError("NATSEventBus.create: the NATS connection is closed")
        return cls(nc, subject_prefix=subject_prefix, buffer_size=buffer_size, timeout=timeout, metrics=metrics,
                   max_batch_events=max_batch_events, max_batch_bytes=max_batch_bytes)

    # ---- properties ----------------------------------------------------------------------
    @property
    def node_id(self) -> str:
        """This bus's node id (hex), carried by every message it publishes."""
        return self._node.hex()

    @property
    def subject_prefix(self) -> str:
        """The first subject token(s) of the bus's messages."""
        return self._prefix

    # ---- publish --------------------------------------------------------------------------
    async def publish(self, namespace: str, event: Event) -> None:
        """Send ``event`` to every node and deliver it to this node's matching subscriptions.

        The event is encoded once. Never blocks on subscribers: a full subscription buffer
        drops the event for that subscription only (counted). The first event of a loop
        iteration is handed to nats-py at once; later ones of the same iteration and subject
        travel together in one message when the iteration ends (see the module docstring).

        Raises:
            BusClosedError: the bus is closed.
            InvalidNameError: ``namespace`` is not an exact namespace, or a bad actor id.
            InvalidInputError: ``event`` is not an :class:`~aether.event.Event` or cannot be encoded.
            InvalidVersionError: ``event.version`` < 1.
            EventTooLargeError: the message exceeds the server's max payload.
            NatsConnectionError: the connection is closed, or its reconnect buffer is full; or
                a coalesced message of earlier events could not be sent (reported once).
            PermissionDeniedError: the server refused an earlier publish to the same subject
                (namespace and event type). The server reports a refusal after the fact: the
                first refused publish returns normally, and :meth:`flush` raises for it.
        """
        route = self._publish_route(namespace, event)
        event_type = event.event_type
        try:
            subject = route.subjects[event_type]
        except (KeyError, TypeError):
            subject = self._subject_for(route, event_type)
        if self._refused_subjects and subject.lower() in self._refused_subjects:
            raise PermissionDeniedError(f"publishing to {route.namespace!r}: the NATS server refused "
                                        f"{self._refused_subjects[subject.lower()]}")
        if self._send_failure is not None:
            failure, self._send_failure = self._send_failure, None
            raise failure
        payload = encode_event(event)
        trace = _tracing.bus_publish(route.namespace, subject, event) if _tracing.TRACER is not None else None
        batch = self._batch
        if batch is not None:
            payloads = batch.payloads
            size = batch.size + len(payload)
            if trace:
                size += context_size(trace)
            if (batch.subject == subject and len(payloads) < self._max_batch_events and size <= batch.limit
                    and payload[1] == _FORMAT_V1):
                batch.size = size
                if trace is None and batch.contexts is None:
                    payloads.append(payload)
                else:
                    self._add(batch, payload, trace)
                route.seq += 1
                route.published += 1
                subs = route.subs
                if subs:
                    fanout(subs, event, route)
                return
            self._batch = None
            await self._send_batch(batch, report=True)  # raises: this event is not published
        if self._busy:
            if self._nc.is_closed:
                raise NatsConnectionError(f"publishing to {route.namespace!r}: NATS connection unavailable "
                                          "(ConnectionClosedError)")
            limit = min(self._max_batch_bytes, self._nc.max_payload)
            if self._max_batch_events > 1 and len(payload) + BATCH_OVERHEAD <= limit and payload[1] == _FORMAT_V1:
                seq = route.seq + 1
                route.seq = seq
                self._batch = _Batch(route, subject, seq, payload, trace, limit)
                route.published += 1
                subs = route.subs
                if subs:
                    fanout(subs, event, route)
                return
        else:
            self._busy = True  # the loop iteration's first publish goes out at once
        seq = route.seq + 1
        route.seq = seq
        try:
            await self._nc.publish(subject, pack_header(self._head, seq) + payload, headers=trace)
            self._unflushed = True
        except NOT_SENT_ERRORS as exc:
            if route.seq == seq:
                route.seq = seq - 1  # nothing was queued: receivers must not see a gap
            if is_payload_too_large(exc):
                raise EventTooLargeError(event.actor_id, len(payload) + HEADER_SIZE, self._nc.max_payload) from exc
            raise _translate(exc, f"publishing to {route.namespace!r}") from exc
        except Exception as exc:
            raise _translate(exc, f"publishing to {route.namespace!r}") from exc
        finally:
            if not self._end_pending:
                self._end_pending = True
                asyncio.get_running_loop().call_soon(self._iteration_end)
        route.published += 1
        subs = route.subs
        if subs:
            fanout(subs, event, route)

    @staticmethod
    def _add(batch: _Batch, payload: bytes, trace: dict[str, str] | None) -> None:
        """Add an event with a trace context, or to a batch that has contexts already (size: the caller)."""
        contexts = batch.contexts
        if contexts is None:
            contexts = batch.contexts = [{} for _ in batch.payloads]
        contexts.append(trace or {})
        batch.payloads.append(payload)

    async def _send_batch(self, batch: _Batch, *, report: bool) -> None:
        """Hand ``batch`` to nats-py as one message (a v1 message when it holds one event).

        Its events were delivered locally and their publishes returned: when the message
        cannot be sent they are lost for the other nodes, whose receivers see the gap in the
        sequence. The error is raised (``report``) or kept for the next publish / flush.
        """
        payloads = batch.payloads
        if len(payloads) == 1:
            context = batch.contexts[0] if batch.contexts else None
            data = pack_header(self._head, batch.first) + payloads[0]
        else:
            context = None
            data = pack_batch(self._node, batch.first, payloads, batch.contexts)
        try:
            await self._nc.publish(batch.subject, data, headers=context or None)
            self._unflushed = True
        except Exception as exc:
            error = _translate(exc, f"publishing {len(payloads)} coalesced events to {batch.route.namespace!r}")
            if report:
                raise error from exc
            self._send_failure = error

    def _iteration_end(self) -> None:
        """Runs once the loop iteration of a publish is over: the next publish goes out at once
        again, and a task sends the batch the iteration left open (if no sender runs already)."""
        self._end_pending = False
        self._busy = False
        if self._batch is not None and self._sender is None:
            self._sender = self._spawn(self._send_open())

    async def _send_open(self) -> None:
        try:
            while (batch := self._batch) is not None:
                self._batch = None
                await self._send_batch(batch, report=False)
        finally:
            self._sender = None

    def _subject_for(self, route: Route, event_type: object) -> str:
        subject = event_subject(self._prefix, route.namespace, event_type)  # type: ignore[arg-type]
        if len(route.subjects) >= _MAX_TYPES_PER_ROUTE:
            route.subjects.clear()
        route.subjects[event_type] = subject  # type: ignore[index]
        return subject

    def _route_of_subject(self, subject: str) -> Route | None:
        namespace = namespace_of_subject(self._prefix, subject)
        if namespace is None:
            return None
        route = self._router.route(namespace)
        cache = self._subject_routes
        if len(cache) >= _MAX_SUBJECT_CACHE:
            cache.clear()
        cache[subject] = route
        return route

    # ---- subscribe (BusBase.subscribe: one NATS subscription per pattern) ---------------------
    def _ready(self, pattern: str) -> asyncio.Future[None]:
        group = self._groups.get(pattern)
        if group is None:
            loop = asyncio.get_running_loop()
            group = _Group(self, pattern, pattern_subject(self._prefix, pattern), loop.create_future())
            self._groups[pattern] = group
            group.task = self._spawn(group.start())
        return group.ready

    def _attach(self, sub: Subscription) -> None:
        group = self._groups[sub.pattern]
        group.subs = (*group.subs, sub)
        self._sub_groups[sub] = group

    def _detach(self, sub: Subscription) -> None:
        self._router.remove(sub)
        group = self._sub_groups.pop(sub, None)
        if group is None:
            return
        group.subs = tuple(s for s in group.subs if s is not sub)
        if not group.subs and self._groups.get(group.pattern) is group:
            del self._groups[group.pattern]
            self._spawn(group.stop())

    def _group_failed(self, group: _Group, error: AetherError) -> None:
        if self._groups.get(group.pattern) is group:
            del self._groups[group.pattern]
        subs, group.subs = group.subs, ()
        for sub in subs:
            self._router.remove(sub)
            self._sub_groups.pop(sub, None)
            sub._end(error)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until the server has handled everything this node sent, and everything it sent
        this node before now is in the subscriptions' buffers.

        A probe message through the connection and back, then until the NATS subscriptions'
        queues are handled: useful in tests and before reading counters. To see the events of
        several nodes, flush every node, then flush the receiving node again.

        Raises:
            NatsConnectionError: the connection is closed or unavailable, or a coalesced message
                could not be sent since the last flush.
            AetherTimeoutError: not done within ``timeout`` seconds (default: the bus's timeout).
            PermissionDeniedError: the server refused a publish made since the last flush (lack
                of permission), or the bus's probe to its own inbox.
        """
        limit = self._timeout if timeout is None else timeout
        batch, self._batch = self._batch, None
        if batch is not None:
            await self._send_batch(batch, report=False)
        try:
            async with asyncio.timeout(limit):
                self._unflushed = False
                await self._roundtrip(limit)
                # nats-py offers no event for "queue handled": poll its public counter
                while any(g.nats_sub is not None and g.nats_sub.pending_msgs  # noqa: ASYNC110
                          for g in list(self._groups.values())):
                    await asyncio.sleep(0.001)
        except Exception as exc:
            raise _translate(exc, "flushing the bus") from exc
        refusal, self._refusal = self._refusal, None
        if refusal is not None:
            raise refusal
        failure, self._send_failure = self._send_failure, None
        if failure is not None:
            raise failure

    async def _roundtrip(self, timeout: float) -> None:
        """A probe through the connection and back (:meth:`aether._nats.Inbox.probe`): once back, the
        server has processed every command this node queued before it (subscriptions, publishes)
        and has sent this node everything it had for it before the probe.

        Raises:
            AetherTimeoutError, PermissionDeniedError (the inbox refused), NatsConnectionError.
        """
        await self._inbox.probe(timeout, _PROBE, BUS_ERRORS)

    def _denied(self, kind: str, subject: str, text: str) -> None:
        """A permission violation on the connection (called by :func:`aether._nats.watch_permission_denials`).

        A refused subscription ends the subscriptions of its pattern with PermissionDeniedError;
        a refused publish makes later publishes to that subject and the next :meth:`flush` raise
        (a refused probe is the inbox's: :meth:`aether._nats.Inbox.probe` raises it).
        """
        subject = subject.lower()
        if kind.startswith("subscription"):
            for group in list(self._groups.values()):
                if group.subject.lower() == subject:
                    group.refuse(PermissionDeniedError(f"subscribing to {group.pattern!r}: the NATS server "
                                                       f"refused: {text}"))
        elif kind.startswith("publish") and subject.startswith(self._prefix.lower() + "."):
            if len(self._refused_subjects) >= _MAX_SUBJECT_CACHE:
                self._refused_subjects.clear()
            self._refused_subjects[subject] = text
            self._refusal = PermissionDeniedError(f"publishing: the NATS server refused: {text}")

    # ---- stats and lifecycle ----------------------------------------------------------------
    def stats(self) -> BusStats:
        """A snapshot of the bus's counters (see :class:`~aether.bus.BusStats`)."""
        reconnects = int(self._nc.stats.get("reconnects", 0)) - self._reconnects_at_start
        return BusStats(kind=self.kind, subscriptions=len(self._router.subs),
                        namespaces=self._router.namespace_stats(), invalid_messages=self._invalid,
                        reconnects=max(reconnects, 0))

    @property
    def missed(self) -> int:
        """Events known lost in transit, summed over subscriptions (see :attr:`Subscription.missed`)."""
        return sum(route.missed for route in list(self._routes.values()))

    @property
    def gaps(self) -> int:
        """How many times a gap in a publisher's sequence was detected."""
        return sum(route.gaps for route in list(self._routes.values()))

    async def aclose(self) -> None:
        """Close the bus: send what it still holds and wait (within the bus's timeout) until the
        server has it, unsubscribe from NATS, end every subscription's iteration (after its
        buffered events). Further publish/subscribe raise BusClosedError. The nats-py client
        stays open. Idempotent."""
        if not self._closed:
            self._closed = True
            batch, self._batch = self._batch, None
            if batch is not None:  # events published before aclose() still go out
                await self._send_batch(batch, report=False)
            self._router.end_all()
            self._sub_groups.clear()
            groups = list(self._groups.values())
            self._groups.clear()
            for group in groups:
                group.subs = ()
                self._spawn(group.stop())
            if self._metrics is not None:
                self._metrics.detach(self)
        while pending := [task for task in self._tasks if not task.done()]:
            await asyncio.wait(pending)
        inbox, self._inbox_held = self._inbox_held, False
        if inbox:
            await self._inbox.release()
        if self._unflushed and self._nc.is_connected:
            # what it published reaches the server before aclose() returns: nats-py only queues
            # it, and a round trip on another connection (a receiver's flush) does not order after it
            self._unflushed = False
            with contextlib.suppress(Exception):  # a closing bus reports no connection trouble
                await self._nc.flush(max(1, math.ceil(self._timeout)))  # nats-py takes whole seconds

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<NATSEventBus node={self.node_id} {state} subscriptions={len(self._router.subs)} "
                f"nats_subscriptions={len(self._groups)}>")
