"""OpenTelemetry tracing of Aether (extra ``otel``: ``pip install 'aether-nats[otel]'``).

When ``opentelemetry-api`` is importable, Aether records spans through the global tracer
provider (name ``aether``); configure the SDK as usual (``TracerProvider`` with an exporter) and
the spans go wherever the application sends its traces. Without the package the hooks are not
even installed (the decorators return the functions unchanged); after :func:`set_enabled`
``(False)`` (or with the environment variable ``AETHER_TRACING=off``), and while the application
has set no tracer provider (the API alone only hands out no-op spans), every hook is one check
of the module attribute :data:`TRACER` and of the provider: Aether then records nothing and
forwards no trace context.

Spans (names and kinds):

=============================== ======== ================================================================
``aether.request``              CLIENT   :meth:`ClusterManager.request` / :meth:`ClusterClient.request`
``aether.route``                PRODUCER one delivery attempt to the owning node (a routing hop)
``aether.handle``               SERVER   the request handler run on the owning node
``aether.store.append``         PRODUCER ``save_event`` / ``save_events`` of the JetStream store
``aether.store.read``           CLIENT   ``get_events`` / ``get_latest_version``
``aether.bus.publish``          PRODUCER :meth:`NATSEventBus.publish`
``aether.bus.deliver``          CONSUMER a bus message received from another node
``aether.projection.handle``    CONSUMER a projection handler run on a stored event
=============================== ======== ================================================================

**Propagation.** The context travels as W3C ``traceparent`` / ``tracestate`` (the globally
configured propagator, W3C Trace Context by default) in NATS message *headers*: on the routed
request (so the owner's ``aether.handle`` is a child of the caller's ``aether.route``), on the
bus message, and on every appended event's JetStream message. JetStream stores headers with the
message, so a projection handling the event later, in any process, continues the trace of the
request that appended it (``aether.projection.handle`` is a child of ``aether.store.append``).
Event data and metadata are never changed.

Attributes follow OpenTelemetry's messaging conventions where they apply
(``messaging.system`` = ``nats``, ``messaging.operation.type``, ``messaging.destination.name``,
``messaging.message.id``) plus ``aether.actor.id``, ``aether.namespace``, ``aether.event.version``,
``aether.event.type``, ``aether.event.count``, ``aether.shard``, ``aether.node.id``,
``aether.cluster``, ``aether.projection``, ``aether.stream.sequence``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from aether.event import Event

try:
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # the ``otel`` extra is not installed
    _trace = None  # type: ignore[assignment]

__all__ = ["TRACER", "available", "disabled", "enabled", "set_enabled"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

TRACER: Any = None
"""The ``aether`` tracer while tracing is enabled, else ``None`` (every hook checks this)."""

_SYSTEM = "nats"
# the API keeps the provider the application set in this module global (None until then); should a
# future version move it, Aether records through the API's no-ops instead (correct, only slower)
_WATCH_PROVIDER = _trace is not None and hasattr(_trace, "_TRACER_PROVIDER")


def available() -> bool:
    """Whether ``opentelemetry-api`` is installed."""
    return _trace is not None


def enabled() -> bool:
    """Whether Aether records spans now."""
    return TRACER is not None


def set_enabled(on: bool) -> None:
    """Turn Aether's spans on or off (on needs ``opentelemetry-api``; off makes every hook free)."""
    global TRACER
    TRACER = _trace.get_tracer("aether") if on and _trace is not None else None
    if TRACER is not None:
        _trace.get_tracer_provider()  # loads a provider named by OTEL_PYTHON_TRACER_PROVIDER, if any


def _off() -> bool:
    """Whether hooks take the plain path: tracing disabled, or no tracer provider was set.

    Until the application sets a tracer provider (configures the SDK), the API hands out
    non-recording no-op spans: Aether then skips its spans altogether (they would cost several
    µs each and record nothing), so "installed but not configured" costs as little as "absent".
    """
    return TRACER is None or (_WATCH_PROVIDER and _trace._TRACER_PROVIDER is None)


def _span(name: str, kind: Any, attributes: Mapping[str, Any], parent: Any = None) -> Any:
    return TRACER.start_as_current_span(name, context=parent, kind=kind, attributes=attributes,
                                        record_exception=True, set_status_on_exception=True)


def _kind(name: str) -> Any:
    return getattr(_trace.SpanKind, name)


def headers() -> dict[str, str] | None:
    """Message headers carrying the current trace context (``traceparent``…); ``None`` when disabled."""
    if _off():
        return None
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return carrier or None


def inject(carrier: dict[str, str]) -> None:
    """Add the current trace context to message headers (nothing when disabled)."""
    if not _off():
        _propagate.inject(carrier)


def _extract(carrier: Mapping[str, str] | None) -> Any:
    return _propagate.extract(carrier) if carrier else None


def _hooked(function: F, traced: Callable[..., Awaitable[Any]]) -> F:
    """``function`` itself without ``opentelemetry-api``; else a wrapper calling ``traced`` with
    the same arguments while tracing is on, and ``function`` directly while it is off."""
    if _trace is None:
        return function

    @functools.wraps(function)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _off():
            return await function(*args, **kwargs)
        return await traced(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# ---- cluster ----------------------------------------------------------------------------------------
def traced_request(function: F) -> F:
    """``aether.request`` around ``request(self, actor_id, payload, ...)`` of a node or a client."""

    async def traced(self: Any, actor_id: str, *args: Any, **kwargs: Any) -> Any:
        attributes = {"messaging.system": _SYSTEM, "messaging.operation.type": "send",
                      "messaging.operation.name": "request", "aether.actor.id": actor_id,
                      "aether.cluster": self.cluster, "aether.node.id": getattr(self, "node_id", "")}
        with _span("aether.request", _kind("CLIENT"), attributes):
            return await function(self, actor_id, *args, **kwargs)

    return _hooked(function, traced)


def traced_hop(function: F) -> F:
    """``aether.route`` around ``Router._remote(self, owner, req, sent_map, deadline)``."""

    async def traced(self: Any, owner: str, req: Any, *args: Any) -> Any:
        attributes = {"messaging.system": _SYSTEM, "messaging.operation.type": "send",
                      "messaging.destination.name": self._subject(owner), "messaging.message.id": req.request_id,
                      "aether.actor.id": req.actor_id, "aether.shard": req.shard, "aether.node.id": owner,
                      "aether.map.version": req.map_version}
        with _span("aether.route", _kind("PRODUCER"), attributes) as span:
            reply = await function(self, owner, req, *args)
            span.set_attribute("aether.route.answered", reply is not None)
            return reply

    return _hooked(function, traced)


def traced_serve(function: F) -> F:
    """Run ``_serve(self, msg)`` in the trace context carried by the request's headers."""

    async def traced(self: Any, msg: Any) -> Any:
        if not msg.headers:
            return await function(self, msg)
        token = _context.attach(_propagate.extract(msg.headers))
        try:
            return await function(self, msg)
        finally:
            _context.detach(token)

    return _hooked(function, traced)


def traced_handler(function: F) -> F:
    """``aether.handle`` around ``ClusterManager._dispatch(self, req)``."""

    async def traced(self: Any, req: Any) -> Any:
        attributes = {"messaging.system": _SYSTEM, "messaging.operation.type": "process",
                      "messaging.message.id": req.request_id, "aether.actor.id": req.actor_id,
                      "aether.shard": req.shard, "aether.node.id": self.node_id, "aether.cluster": self.cluster,
                      "aether.origin": req.origin}
        with _span("aether.handle", _kind("SERVER"), attributes) as span:
            reply = await function(self, req)
            span.set_attribute("aether.reply.status", reply.status)
            if reply.error_type:
                span.set_status(_trace.Status(_trace.StatusCode.ERROR, f"{reply.error_type}: {reply.error}"))
            return reply

    return _hooked(function, traced)


# ---- store ------------------------------------------------------------------------------------------
def _store_attributes(store: Any, operation: str) -> dict[str, Any]:
    return {"messaging.system": _SYSTEM, "messaging.operation.type": operation,
            "messaging.destination.name": store.stream, "aether.namespace": store.namespace or ""}


def traced_append(function: F) -> F:
    """``aether.store.append`` around ``save_event(self, event)`` / ``save_events(self, events)``."""

    async def traced(self: Any, events: Any) -> Any:
        batch: Sequence[Event] = events if isinstance(events, Sequence) else (events,)
        attributes = _store_attributes(self, "send")
        if batch:
            first = batch[0]
            attributes.update({"aether.actor.id": first.actor_id, "aether.event.version": first.version,
                               "aether.event.type": first.event_type, "aether.event.count": len(batch),
                               "messaging.message.id": first.id})
        with _span("aether.store.append", _kind("PRODUCER"), attributes):
            return await function(self, events)

    return _hooked(function, traced)


def traced_read(function: F) -> F:
    """``aether.store.read`` around ``get_events(self, actor_id, ...)`` / ``get_latest_version``."""

    async def traced(self: Any, actor_id: str, *args: Any, **kwargs: Any) -> Any:
        attributes = _store_attributes(self, "receive")
        attributes.update({"aether.actor.id": actor_id, "aether.read": function.__name__})
        with _span("aether.store.read", _kind("CLIENT"), attributes) as span:
            result = await function(self, actor_id, *args, **kwargs)
            if isinstance(result, list):
                span.set_attribute("aether.event.count", len(result))
            return result

    return _hooked(function, traced)


# ---- bus --------------------------------------------------------------------------------------------
def bus_publish(namespace: str, subject: str, event: Event) -> dict[str, str] | None:
    """Record ``aether.bus.publish`` and return the headers carrying its context (``None`` when disabled)."""
    if _off():
        return None
    attributes = {"messaging.system": _SYSTEM, "messaging.operation.type": "send",
                  "messaging.destination.name": subject, "messaging.message.id": event.id,
                  "aether.namespace": namespace, "aether.actor.id": event.actor_id,
                  "aether.event.version": event.version, "aether.event.type": event.event_type}
    with _span("aether.bus.publish", _kind("PRODUCER"), attributes):
        carrier: dict[str, str] = {}
        _propagate.inject(carrier)
    return carrier


def bus_deliver(carrier: Mapping[str, str] | None, subject: str, event: Event, subscriptions: int) -> None:
    """Record ``aether.bus.deliver`` for a message received from another node."""
    if _off():
        return
    attributes = {"messaging.system": _SYSTEM, "messaging.operation.type": "receive",
                  "messaging.destination.name": subject, "messaging.message.id": event.id,
                  "aether.actor.id": event.actor_id, "aether.event.version": event.version,
                  "aether.event.type": event.event_type, "aether.subscriptions": subscriptions}
    with _span("aether.bus.deliver", _kind("CONSUMER"), attributes, _extract(carrier)):
        pass


# ---- projections ------------------------------------------------------------------------------------
async def projection_handle(handler: Callable[[Event, int], Awaitable[None]], event: Event, seq: int,
                            carrier: Mapping[str, str] | None, projection: str, stream: str) -> None:
    """Run a projection handler inside ``aether.projection.handle`` (child of the event's append)."""
    if _off():
        await handler(event, seq)
        return
    attributes = {"messaging.system": _SYSTEM, "messaging.operation.type": "process",
                  "messaging.destination.name": stream, "messaging.message.id": event.id,
                  "aether.projection": projection, "aether.stream.sequence": seq, "aether.actor.id": event.actor_id,
                  "aether.event.version": event.version, "aether.event.type": event.event_type}
    with _span("aether.projection.handle", _kind("CONSUMER"), attributes, _extract(carrier)):
        await handler(event, seq)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Turn tracing off inside the block (benchmarks compare both)."""
    was = TRACER
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(was is not None)


set_enabled(os.environ.get("AETHER_TRACING", "").lower() not in ("0", "off", "false", "no"))
