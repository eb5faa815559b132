"""The in-process routing core shared by both buses.

A :class:`Route` per exact namespace caches the tuple of subscriptions whose pattern matches
it, so a publish costs one dict lookup plus one loop over the interested subscriptions; the
route is updated when a subscription is added or removed (rare), never on publish. The
route also carries the namespace's counters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from aether.errors import InvalidInputError
from aether.event import Event
from aether.names import check_event, validate_namespace, validate_namespace_pattern

from .stats import NamespaceStats
from .subscription import Subscription

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "Route",
    "Router",
    "check_buffer_size",
    "check_publish_event",
    "compile_pattern",
    "fanout",
    "fanout_all",
    "normalise_filters",
    "subscription_settings",
]

DEFAULT_BUFFER_SIZE = 1024


class Route:
    """One exact namespace: its interested subscriptions and its counters."""

    __slots__ = ("delivered", "dropped", "gaps", "missed", "namespace", "published", "seq", "subjects", "subs")

    def __init__(self, namespace: str, subs: tuple[Subscription, ...]) -> None:
        self.namespace = namespace
        self.subs = subs
        self.published = 0
        self.delivered = 0
        self.dropped = 0
        self.missed = 0
        self.gaps = 0
        self.seq = 0  # NATS bus: sequence of the last event this node published in the namespace
        self.subjects: dict[str, str] = {}  # NATS bus: event type -> subject

    def stats(self) -> NamespaceStats:
        return NamespaceStats(self.published, self.delivered, self.dropped, self.missed, self.gaps)


def fanout(subs: tuple[Subscription, ...], event: Event, route: Route) -> None:
    """Offer ``event`` to each subscription in ``subs``: filter, buffer or drop, wake the reader."""
    delivered = 0
    for sub in subs:
        if sub._filtered:
            types = sub._types
            if types is not None and event.event_type not in types:
                continue
            prefix = sub._prefix
            if prefix is not None and not event.actor_id.startswith(prefix):
                continue
        buf = sub._buf
        if len(buf) >= sub._maxsize:
            sub._dropped += 1
            route.dropped += 1
            continue
        buf.append(event)
        delivered += 1
        if sub._waiter is not None:  # its reader waits for an event (a call only then)
            sub._wake()
    route.delivered += delivered


def fanout_all(subs: tuple[Subscription, ...], events: list[Event], route: Route) -> None:
    """Offer ``events`` (in order) to each subscription in ``subs``: :func:`fanout` for a batch."""
    delivered = 0
    for sub in subs:
        chosen = events
        if sub._filtered:
            types = sub._types
            prefix = sub._prefix
            chosen = [e for e in events if (types is None or e.event_type in types)
                      and (prefix is None or e.actor_id.startswith(prefix))]
            if not chosen:
                continue
        buf = sub._buf
        room = sub._maxsize - len(buf)
        if room <= 0:
            sub._dropped += len(chosen)
            route.dropped += len(chosen)
            continue
        if len(chosen) > room:
            lost = len(chosen) - room
            sub._dropped += lost
            route.dropped += lost
            chosen = chosen[:room]
        buf.extend(chosen)
        delivered += len(chosen)
        if sub._waiter is not None:
            sub._wake()
    route.delivered += delivered


def compile_pattern(pattern: str) -> Callable[[str], object]:
    """A matcher ``f(namespace) -> truthy`` for a validated pattern (``*`` one token, ``>`` one or more)."""
    parts = []
    for token in pattern.split("."):
        if token == "*":
            parts.append(r"[^.]+")
        elif token == ">":
            parts.append(r".+")
        else:
            parts.append(re.escape(token))
    return re.compile(r"\.".join(parts)).fullmatch


def check_buffer_size(buffer_size: object) -> int:
    """Raise InvalidInputError unless ``buffer_size`` is an int >= 1."""
    if type(buffer_size) is not int or buffer_size < 1:
        raise InvalidInputError(f"buffer_size must be an int >= 1, got {buffer_size!r}")
    return buffer_size


def normalise_filters(event_types: Iterable[str] | None,
                      actor_prefix: str | None) -> tuple[frozenset[str] | None, str | None]:
    """Validate the subscription filters and return them in their stored form.

    Raises:
        InvalidInputError: ``event_types`` is a single str, empty, or holds a non-str;
            ``actor_prefix`` is not a str.
    """
    types: frozenset[str] | None = None
    if event_types is not None:
        if isinstance(event_types, str | bytes):
            raise InvalidInputError("event_types must be a collection of str (e.g. ['Deposited']), not a str")
        try:
            types = frozenset(event_types)
        except TypeError as exc:
            raise InvalidInputError(f"event_types must be a collection of str: {exc}") from None
        if not types:
            raise InvalidInputError("event_types must not be empty (pass None to accept every type)")
        for t in types:
            if not isinstance(t, str):
                raise InvalidInputError(f"event_types must hold str values, got {type(t).__name__}")
    if actor_prefix is not None:
        if not isinstance(actor_prefix, str):
            raise InvalidInputError(f"actor_prefix must be a str, got {type(actor_prefix).__name__}")
        if not actor_prefix:
            actor_prefix = None
    return types, actor_prefix


def check_publish_event(event: object) -> None:
    """The slow path of a publish's event check (the fast path accepts an Event with an int version >= 1
    and a non-empty str actor id).

    Raises:
        InvalidInputError: not an :class:`~aether.event.Event`.
        InvalidVersionError / InvalidNameError: version < 1 or not an int, or a bad actor id.
    """
    if not isinstance(event, Event):
        raise InvalidInputError(f"publish takes an aether.Event, got {type(event).__name__}")
    check_event(event)


class Router:
    """Routes per namespace and the set of open subscriptions with their pattern matchers."""

    __slots__ = ("routes", "subs")

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.subs: dict[Subscription, Callable[[str], object]] = {}

    def route(self, namespace: object) -> Route:
        """The route of an exact namespace, created (and validated) on first use.

        Raises:
            InvalidNameError: not a valid exact namespace.
        """
        ns = validate_namespace(namespace)
        route = self.routes.get(ns)
        if route is not None:
            return route
        route = Route(ns, tuple(sub for sub, match in self.subs.items() if match(ns)))
        self.routes[ns] = route
        return route

    def add(self, pattern: str, sub: Subscription) -> None:
        match = compile_pattern(pattern)
        self.subs[sub] = match
        for route in self.routes.values():
            if match(route.namespace):
                route.subs = (*route.subs, sub)

    def remove(self, sub: Subscription) -> bool:
        """Forget ``sub``; False when it was not registered."""
        match = self.subs.pop(sub, None)
        if match is None:
            return False
        for route in self.routes.values():
            if sub in route.subs:
                route.subs = tuple(s for s in route.subs if s is not sub)
        return True

    def end_all(self) -> None:
        """End every subscription's iteration (buffered events stay readable) and forget them."""
        subs = list(self.subs)
        self.subs.clear()
        for route in self.routes.values():
            route.subs = ()
        for sub in subs:
            sub._end()

    def namespace_stats(self) -> dict[str, NamespaceStats]:
        return {ns: route.stats() for ns, route in list(self.routes.items())}



def subscription_settings(pattern: str, event_types: Iterable[str] | None, actor_prefix: str | None,
                          buffer_size: int | None, default_size: int) -> tuple[frozenset[str] | None, str | None, int]:
    """Check a ``subscribe()`` call's arguments (both buses): ``(event types, actor prefix, buffer size)``.

    Raises:
        InvalidNameError: invalid pattern. InvalidInputError: invalid filters or buffer size.
    """
    validate_namespace_pattern(pattern)
    types, prefix = normalise_filters(event_types, actor_prefix)
    return types, prefix, default_size if buffer_size is None else check_buffer_size(buffer_size)
