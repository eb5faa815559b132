"""NATSEventBus: the event bus across processes and machines, on core NATS.

Every bus instance is a *node* with a random 8-byte id. ``publish`` sends the event once on
its subject (see :mod:`aether.bus.wire` for the layout) and delivers it to the node's own
matching subscriptions directly. Each distinct subscription pattern on a node owns ONE NATS
subscription (a *group*) and hands what it receives to that pattern's local subscriptions
only, so a subscription gets every remote event exactly once even when several patterns
overlap; messages carrying the node's own id are skipped (they were delivered locally).

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
import os
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from aether import tracing as _tracing
from aether._nats import check_client, watch_permission_denials
from aether.codec import decode_event, encode_event
from aether.errors import (
    AetherError,
    AetherTimeoutError,
    BusClosedError,
    CorruptEventError,
    EventTooLargeError,
    NatsConnectionError,
    PermissionDeniedError,
)
from aether.event import Event

from ._router import (
    DEFAULT_BUFFER_SIZE,
    Route,
    Router,
    check_buffer_size,
    check_publish_event,
    fanout,
    subscription_settings,
)
from .stats import BusMetricsHook, BusStats
from .subscription import Subscription
from .wire import (
    DEFAULT_SUBJECT_PREFIX,
    HEADER_SIZE,
    MAGIC,
    ORIGIN,
    check_bus_prefix,
    event_subject,
    namespace_of_subject,
    pack_header,
    pattern_subject,
)

__all__ = ["NATSEventBus"]

_MAX_SUBJECT_CACHE = 65_536
_MAX_TYPES_PER_ROUTE = 1024
_MAX_PUBLISHERS = 4096
_unpack_origin = ORIGIN.unpack_from

# nats-py errors raised before a message is queued: the sequence number can be reused
_NOT_SENT = (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError,
             nats.errors.OutboundBufferLimitError, nats.errors.MaxPayloadError, nats.errors.BadSubjectError)


def _translate(exc: BaseException, what: str) -> AetherError:
    """Map a nats-py / asyncio exception raised by a bus operation to an AetherError."""
    if isinstance(exc, AetherError):
        return exc
    if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError | TimeoutError):
        return AetherTimeoutError(f"{what}: no reply from NATS in time")
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionDrainingError
                  | nats.errors.StaleConnectionError | nats.errors.OutboundBufferLimitError
                  | nats.errors.NoServersError | ConnectionError | OSError):
        return NatsConnectionError(f"{what}: NATS connection unavailable ({type(exc).__name__})")
    text = str(exc)
    if "permissions violation" in text.lower():
        return PermissionDeniedError(f"{what}: {text}")
    return NatsConnectionError(f"{what}: {type(exc).__name__}: {text}")


class _Group:
    """One NATS subscription shared by the local subscriptions of one pattern."""

    __slots__ = ("bus", "denied", "error", "nats_sub", "own", "pattern", "ready", "seen", "stopping", "subject",
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
        """Hot path: skip own messages, check the sequence, decode once, fan out."""
        data = msg.data
        if data.startswith(self.own):
            return
        if len(data) <= HEADER_SIZE or not data.startswith(MAGIC):
            self.bus._invalid += 1
            return
        route = self.subject_routes.get(msg.subject)
        if route is None:
            route = self.bus._route_of_subject(msg.subject)
            if route is None:
                self.bus._invalid += 1
                return
        node, seq = _unpack_origin(data, 2)
        seen = self.seen.get(node)
        if seen is None:
            seen = self._new_publisher(node)
        last = seen.get(route, 0)
        if last and seq != last + 1:
            if seq <= last:
                return  # a copy of a message already handled
            self._gap(route, seq - last - 1)
        seen[route] = seq
        try:
            event = decode_event(data[HEADER_SIZE:])
        except CorruptEventError:
            self.bus._invalid += 1
            return
        subs = self.subs
        if subs:
            fanout(subs, event, route)
        if _tracing.TRACER is not None:
            _tracing.bus_deliver(msg.headers, msg.subject, event, len(subs))

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


class NATSEventBus:
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

    Raises:
        InvalidNameError: invalid ``subject_prefix``.
        InvalidInputError: invalid ``buffer_size`` or ``timeout``.
    """

    kind = "nats"

    def __init__(self, nc: Client, *, subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
                 buffer_size: int = DEFAULT_BUFFER_SIZE, timeout: float = 5.0,
                 metrics: BusMetricsHook | None = None) -> None:
        check_client(nc, "NATSEventBus")
        from aether.errors import InvalidInputError

        self._prefix = check_bus_prefix(subject_prefix)
        self._buffer_size = check_buffer_size(buffer_size)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidInputError(f"timeout must be > 0, got {timeout!r}")
        self._timeout = float(timeout)
        self._nc = nc
        self._node = os.urandom(8)
        self._head = MAGIC + self._node
        self._router = Router()
        self._routes = self._router.routes
        self._subject_routes: dict[str, Route] = {}
        self._groups: dict[str, _Group] = {}
        self._sub_groups: dict[Subscription, _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._invalid = 0
        self._probe_prefix = ""
        self._probe_sub: Any = None
        self._probe_lock = asyncio.Lock()
        self._probes: dict[str, asyncio.Future[None]] = {}
        self._probe_count = 0
        self._closed = False
        self._refused_subjects: dict[str, str] = {}  # lower-cased bus subjects the server refused
        self._refusal: PermissionDeniedError | None = None  # a refused publish flush() has not reported
        self._probe_refused: PermissionDeniedError | None = None
        watch_permission_denials(nc, self)
        self._reconnects_at_start = int(nc.stats.get("reconnects", 0)) if hasattr(nc, "stats") else 0
        self._metrics = metrics
        if metrics is not None:
            metrics.attach(self)

    @classmethod
    async def create(cls, nc: Client, *, subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
                     buffer_size: int = DEFAULT_BUFFER_SIZE, timeout: float = 5.0,
                     metrics: BusMetricsHook | None = None) -> NATSEventBus:
        """Create a bus on a connected nats-py client.

        Raises:
            NatsConnectionError: the client is closed.
            InvalidNameError / InvalidInputError: invalid arguments.
        """
        check_client(nc, "NATSEventBus.create")
        if nc.is_closed:
            raise NatsConnectionError("NATSEventBus.create: the NATS connection is closed")
        return cls(nc, subject_prefix=subject_prefix, buffer_size=buffer_size, timeout=timeout, metrics=metrics)

    # ---- properties ----------------------------------------------------------------------
    @property
    def node_id(self) -> str:
        """This bus's node id (hex), carried by every message it publishes."""
        return self._node.hex()

    @property
    def subject_prefix(self) -> str:
        """The first subject token(s) of the bus's messages."""
        return self._prefix

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    @property
    def subscriptions(self) -> int:
        """Open subscriptions."""
        return len(self._router.subs)

    # ---- publish --------------------------------------------------------------------------
    async def publish(self, namespace: str, event: Event) -> None:
        """Send ``event`` to every node and deliver it to this node's matching subscriptions.

        The event is encoded once. Never blocks on subscribers: a full subscription buffer
        drops the event for that subscription only (counted).

        Raises:
            BusClosedError: the bus is closed.
            InvalidNameError: ``namespace`` is not an exact namespace, or a bad actor id.
            InvalidInputError: ``event`` is not an :class:`~aether.event.Event` or cannot be encoded.
            InvalidVersionError: ``event.version`` < 1.
            EventTooLargeError: the message exceeds the server's max payload.
            NatsConnectionError: the connection is closed, or its reconnect buffer is full.
            PermissionDeniedError: the server refused an earlier publish to the same subject
                (namespace and event type). The server reports a refusal after the fact: the
                first refused publish returns normally, and :meth:`flush` raises for it.
        """
        if self._closed:
            raise BusClosedError("publish on a closed NATSEventBus")
        try:
            route = self._routes[namespace]
        except (KeyError, TypeError):
            route = self._router.route(namespace)
        if type(event) is not Event or type(event.version) is not int or event.version < 1:
            check_publish_event(event)
        event_type = event.event_type
        try:
            subject = route.subjects[event_type]
        except (KeyError, TypeError):
            subject = self._subject_for(route, event_type)
        if self._refused_subjects and subject.lower() in self._refused_subjects:
            raise PermissionDeniedError(f"publishing to {route.namespace!r}: the NATS server refused "
                                        f"{self._refused_subjects[subject.lower()]}")
        payload = encode_event(event)
        seq = route.seq + 1
        route.seq = seq
        try:
            trace = _tracing.bus_publish(route.namespace, subject, event) if _tracing.TRACER is not None else None
            await self._nc.publish(subject, pack_header(self._head, seq) + payload, headers=trace)
        except _NOT_SENT as exc:
            if route.seq == seq:
                route.seq = seq - 1  # nothing was queued: receivers must not see a gap
            if isinstance(exc, nats.errors.MaxPayloadError):
                raise EventTooLargeError(event.actor_id, len(payload) + HEADER_SIZE, self._nc.max_payload) from exc
            raise _translate(exc, f"publishing to {route.namespace!r}") from exc
        except Exception as exc:
            raise _translate(exc, f"publishing to {route.namespace!r}") from exc
        route.published += 1
        subs = route.subs
        if subs:
            fanout(subs, event, route)

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

    # ---- subscribe ------------------------------------------------------------------------
    def subscribe(self, pattern: str, *, event_types: Iterable[str] | None = None, actor_prefix: str | None = None,
                  buffer_size: int | None = None) -> Subscription:
        """Subscribe to the namespaces matching ``pattern`` on every node.

        Local events reach the subscription at once; events of other nodes once the NATS
        server has registered the interest: ``await sub.ready()`` (or ``async with``) waits for
        that. Call it from the event loop of the bus.

        Args:
            pattern: an exact namespace, or one with ``*`` (one token) / final ``>`` (one or
                more tokens) wildcards.
            event_types: only these event types (``None``: all).
            actor_prefix: only actors whose id starts with this prefix.
            buffer_size: this subscription's buffer size (default: the bus's).

        Raises:
            BusClosedError: the bus is closed.
            InvalidNameError: invalid pattern (wildcard inside a token, misplaced ``>``, …).
            InvalidInputError: invalid filters or buffer size.
        """
        if self._closed:
            raise BusClosedError("subscribe on a closed NATSEventBus")
        types, prefix, size = subscription_settings(pattern, event_types, actor_prefix, buffer_size,
                                                    self._buffer_size)
        group = self._groups.get(pattern)
        if group is None:
            loop = asyncio.get_running_loop()
            group = _Group(self, pattern, pattern_subject(self._prefix, pattern), loop.create_future())
            self._groups[pattern] = group
            group.task = self._spawn(group.start())
        sub = Subscription(pattern, event_types=types, actor_prefix=prefix, buffer_size=size,
                           detach=self._detach, ready=group.ready)
        group.subs = (*group.subs, sub)
        self._sub_groups[sub] = group
        self._router.add(pattern, sub)
        return sub

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
            NatsConnectionError: the connection is closed or unavailable.
            AetherTimeoutError: not done within ``timeout`` seconds (default: the bus's timeout).
            PermissionDeniedError: the server refused a publish made since the last flush (lack
                of permission), or the bus's probe to its own inbox.
        """
        limit = self._timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
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

    async def _roundtrip(self, timeout: float) -> None:
        """Send a probe message through the connection's outgoing queue and wait for it to come back.

        When it is back, the server has processed every command this node queued before it
        (subscriptions, publishes) and has sent this node everything it had for it before the
        probe. nats-py's ``flush()`` cannot promise the first: its PING is written ahead of
        commands still waiting in the client's outgoing queue.
        """
        nc = self._nc
        if self._probe_refused is not None:
            raise self._probe_refused
        if self._probe_sub is None:
            async with self._probe_lock:
                if self._probe_sub is None:
                    prefix = f"{nc.new_inbox()}."
                    self._probe_prefix = prefix  # set first: a refusal is matched against it
                    self._probe_sub = await nc.subscribe(prefix + "*", cb=self._on_probe)
        self._probe_count += 1
        token = str(self._probe_count)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._probes[token] = future
        try:
            await nc.publish(self._probe_prefix + token, b"")
            async with asyncio.timeout(timeout):
                await future
        finally:
            del self._probes[token]

    def _denied(self, kind: str, subject: str, text: str) -> None:
        """A permission violation on the connection (called by :func:`aether._nats.watch_permission_denials`).

        A refused subscription ends the subscriptions of its pattern with PermissionDeniedError;
        a refused publish makes later publishes to that subject and the next :meth:`flush` raise.
        """
        subject = subject.lower()
        probe = self._probe_prefix.lower()
        if probe and subject.startswith(probe):
            error = PermissionDeniedError(f"the bus's probe through its own inbox: the NATS server refused: {text}")
            self._probe_refused = error
            for future in self._probes.values():
                if not future.done():
                    future.set_exception(error)
        elif kind.startswith("subscription"):
            for group in list(self._groups.values()):
                if group.subject.lower() == subject:
                    group.refuse(PermissionDeniedError(f"subscribing to {group.pattern!r}: the NATS server "
                                                       f"refused: {text}"))
        elif kind.startswith("publish") and subject.startswith(self._prefix.lower() + "."):
            if len(self._refused_subjects) >= _MAX_SUBJECT_CACHE:
                self._refused_subjects.clear()
            self._refused_subjects[subject] = text
            self._refusal = PermissionDeniedError(f"publishing: the NATS server refused: {text}")

    async def _on_probe(self, msg: Msg) -> None:
        future = self._probes.get(msg.subject[len(self._probe_prefix):])
        if future is not None and not future.done():
            future.set_result(None)

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
        """Close the bus: unsubscribe from NATS, end every subscription's iteration (after its
        buffered events). Further publish/subscribe raise BusClosedError. The nats-py client
        stays open. Idempotent."""
        if not self._closed:
            self._closed = True
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
        probe, self._probe_sub = self._probe_sub, None
        if probe is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):  # the connection went away: nothing left to release
                await probe.unsubscribe()

    async def __aenter__(self) -> NATSEventBus:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<NATSEventBus node={self.node_id} {state} subscriptions={len(self._router.subs)} "
                f"nats_subscriptions={len(self._groups)}>")
