"""Upcasters: bring events written with an old payload schema up to date on read.

Stored events are never rewritten. Instead, a registry maps ``(event_type, schema_version)``
to a function that turns the old ``data`` into the next version's ``data``; upcasters chain
(v1 → v2 → v3) until no upcaster matches. An upcaster may also rename the event type::

    upcasters = Upcasters()

    @upcasters.register("Deposited", 1)
    def _cents_to_amount(data: dict[str, Any]) -> dict[str, Any]:
        return {"amount": data["cents"], "currency": "EUR"}

    @upcasters.register("MoneyAdded", 1, to_type="Deposited", to_version=1)
    def _renamed(data: dict[str, Any]) -> dict[str, Any]:
        return {"cents": data["value"]}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aether.aggregate.errors import EventSchemaError
from aether.aggregate.payload import SCHEMA_KEY, schema_version_of
from aether.errors import InvalidInputError
from aether.event import Event

__all__ = ["UpcastFunction", "Upcasters"]

UpcastFunction = Callable[[dict[str, Any]], dict[str, Any]]
"""Takes the old ``data`` (a fresh copy the function may change) and returns the new ``data``."""

_MAX_CHAIN = 64


class Upcasters:
    """A registry of ``(event_type, schema_version) → upcaster``."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], tuple[str, int, UpcastFunction]] = {}

    def __len__(self) -> int:
        return len(self._steps)

    def __contains__(self, key: object) -> bool:
        return key in self._steps

    def add(self, event_type: str, schema_version: int, function: UpcastFunction, *,
            to_type: str | None = None, to_version: int | None = None) -> None:
        """Register ``function`` to upcast ``event_type`` at ``schema_version``.

        The result is ``to_type`` (default: the same type) at ``to_version`` (default:
        ``schema_version + 1``).

        Raises:
            InvalidInputError: a bad version, an upcaster already registered for the key, or a
                step that leads back to itself.
        """
        if type(schema_version) is not int or schema_version < 1:
            raise InvalidInputError(f"schema_version must be an int >= 1, got {schema_version!r}")
        target_type = event_type if to_type is None else to_type
        target_version = schema_version + 1 if to_version is None else to_version
        if type(target_version) is not int or target_version < 1:
            raise InvalidInputError(f"to_version must be an int >= 1, got {target_version!r}")
        if (target_type, target_version) == (event_type, schema_version):
            raise InvalidInputError(f"upcaster for {event_type!r} v{schema_version} leads back to itself")
        key = (event_type, schema_version)
        if key in self._steps:
            raise InvalidInputError(f"an upcaster for {event_type!r} v{schema_version} is already registered")
        self._steps[key] = (target_type, target_version, function)

    def register(self, event_type: str, schema_version: int, *, to_type: str | None = None,
                 to_version: int | None = None) -> Callable[[UpcastFunction], UpcastFunction]:
        """Decorator form of :meth:`add`."""

        def decorator(function: UpcastFunction) -> UpcastFunction:
            self.add(event_type, schema_version, function, to_type=to_type, to_version=to_version)
            return function

        return decorator

    def upcast(self, event: Event) -> Event:
        """``event`` brought to its newest known schema (the same object when nothing applies).

        Raises:
            EventSchemaError: an upcaster raised, returned something other than a dict, or the
                chain does not end.
        """
        steps = self._steps
        if not steps:
            return event
        event_type = event.event_type
        version = schema_version_of(event.metadata)
        step = steps.get((event_type, version))
        if step is None:
            return event
        data: dict[str, Any] = event.data
        for _ in range(_MAX_CHAIN):
            target_type, target_version, function = step
            try:
                new_data = function(dict(data))
            except Exception as exc:
                raise EventSchemaError(event.actor_id, event.version, event_type,
                                       f"upcaster from v{version} failed: {type(exc).__name__}: {exc}") from exc
            if not isinstance(new_data, dict):
                raise EventSchemaError(event.actor_id, event.version, event_type,
                                       f"upcaster from v{version} returned {type(new_data).__name__}, not dict")
            data, event_type, version = new_data, target_type, target_version
            next_step = steps.get((event_type, version))
            if next_step is None:
                metadata = dict(event.metadata)
                metadata[SCHEMA_KEY] = str(version)
                return Event(event_type, event.actor_id, event.version, data, metadata, event.id, event.timestamp)
            step = next_step
        raise EventSchemaError(event.actor_id, event.version, event.event_type,
                               f"upcaster chain longer than {_MAX_CHAIN} steps (a cycle?)")
