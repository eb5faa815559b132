"""A projection: a named set of event handlers that builds a read model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TypeVar

from aether.errors import InvalidInputError, InvalidNameError
from aether.event import Event
from aether.names import encode_token

__all__ = ["Handler", "Projection", "RebuildHook"]

Handler = Callable[[Event, int], Awaitable[None]]
"""``async def handler(event, position)``; ``position`` is the event's stream sequence."""

RebuildHook = Callable[[], Awaitable[None]]
"""``async def hook()``: called by ``rebuild()`` before replaying, to clear the read model."""

H = TypeVar("H", bound=Handler)
R = TypeVar("R", bound=RebuildHook)

MAX_NAME_LENGTH = 128


def validate_projection_name(name: object) -> str:
    """Check a projection name (any non-empty text of at most 128 characters).

    Raises:
        InvalidNameError: not a str, empty, too long, or not UTF-8 encodable.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"projection name must be a str, got {type(name).__name__}")
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"projection name must be 1..{MAX_NAME_LENGTH} characters, got {name!r}")
    encode_token(name)
    return name


class Projection:
    """Handlers by event type that build one read model, under a name that identifies its position.

    Events whose type has no handler (and no catch-all handler is set) are passed over: the
    projection's position still moves past them.

    Args:
        name: identifies the projection's checkpoint, lease and dead letters.
        handlers: ``{event_type: handler}``; more can be added with :meth:`on`.
        default: catch-all handler for every other event type.
        actor_prefix: only events of actors whose id starts with this are handled.
        rebuild_hook: called by ``rebuild()`` before replaying from the start.

    Raises:
        InvalidNameError: bad name.
        InvalidInputError: an empty actor prefix or event type.

    Example::

        balances = Projection("balances")

        @balances.on("Deposited")
        async def deposited(event: Event, position: int) -> None:
            ...
    """

    def __init__(self, name: str, handlers: Mapping[str, Handler] | None = None, *, default: Handler | None = None,
                 actor_prefix: str | None = None, rebuild_hook: RebuildHook | None = None) -> None:
        self.name = validate_projection_name(name)
        self._handlers: dict[str, Handler] = {}
        for event_type, handler in (handlers or {}).items():
            self._add(event_type, handler)
        self.default = default
        if actor_prefix is not None and (not isinstance(actor_prefix, str) or not actor_prefix):
            raise InvalidInputError("actor_prefix must be a non-empty str or None")
        if actor_prefix is not None:
            encode_token(actor_prefix)
        self.actor_prefix = actor_prefix
        self.rebuild_hook = rebuild_hook

    def _add(self, event_type: str, handler: Handler) -> None:
        if not isinstance(event_type, str) or not event_type:
            raise InvalidInputError("event types must be non-empty strings")
        self._handlers[event_type] = handler

    def on(self, *event_types: str) -> Callable[[H], H]:
        """Decorator registering a handler for one or more event types.

        Raises:
            InvalidInputError: no or empty event type.
        """
        if not event_types:
            raise InvalidInputError("on() needs at least one event type")

        def register(handler: H) -> H:
            for event_type in event_types:
                self._add(event_type, handler)
            return handler

        return register

    def on_any(self, handler: H) -> H:
        """Decorator setting the catch-all handler (for types without their own handler)."""
        self.default = handler
        return handler

    def on_rebuild(self, hook: R) -> R:
        """Decorator setting the hook ``rebuild()`` calls before replaying (clear the read model there)."""
        self.rebuild_hook = hook
        return hook

    @property
    def handlers(self) -> Mapping[str, Handler]:
        """The handlers by event type (read-only view)."""
        return MappingProxyType(self._handlers)

    def handler_for(self, event_type: str) -> Handler | None:
        """The handler for ``event_type``: its own, else the catch-all, else ``None``."""
        return self._handlers.get(event_type, self.default)

    def __repr__(self) -> str:
        return f"Projection({self.name!r}, types={sorted(self._handlers)!r}, default={self.default is not None})"
