"""Errors of the aggregate helpers (all part of the :class:`~aether.errors.AetherError` tree)::

    AetherError
    ├── VersionConflictError
    │   └── ConflictRetriesExhaustedError   every attempt of a command met a concurrent writer
    └── AggregateError                      an aggregate cannot be rebuilt from its history
        ├── UnknownEventError               no handler for an event type
        └── EventSchemaError                a payload does not match its declared type, or upcasting failed
"""

from __future__ import annotations

from aether.errors import AetherError, VersionConflictError

__all__ = ["AggregateError", "ConflictRetriesExhaustedError", "EventSchemaError", "UnknownEventError"]


class AggregateError(AetherError):
    """An aggregate cannot be rebuilt from its stored history."""


class UnknownEventError(AggregateError):
    """The aggregate has no handler for a stored event type (and does not ignore unknown events).

    Attributes:
        actor_id, version, event_type: the offending event.
        aggregate: the aggregate type's name.
    """

    def __init__(self, actor_id: str, version: int, event_type: str, aggregate: str) -> None:
        self.actor_id = actor_id
        self.version = version
        self.event_type = event_type
        self.aggregate = aggregate
        super().__init__(
            f"{aggregate} has no handler for event type {event_type!r} (actor {actor_id!r}, version {version}); "
            "register one with @applies, register an upcaster, or set ignore_unknown_events = True"
        )

    def __reduce__(self) -> tuple[type[UnknownEventError], tuple[str, int, str, str]]:
        return (type(self), (self.actor_id, self.version, self.event_type, self.aggregate))


class EventSchemaError(AggregateError):
    """A stored payload does not fit its payload type, or an upcaster failed.

    Attributes:
        actor_id, version, event_type: the offending event.
    """

    def __init__(self, actor_id: str, version: int, event_type: str, reason: str) -> None:
        self.actor_id = actor_id
        self.version = version
        self.event_type = event_type
        self.reason = reason
        super().__init__(f"event {event_type!r} (actor {actor_id!r}, version {version}): {reason}")

    def __reduce__(self) -> tuple[type[EventSchemaError], tuple[str, int, str, str]]:
        return (type(self), (self.actor_id, self.version, self.event_type, self.reason))


class ConflictRetriesExhaustedError(VersionConflictError):
    """A command met a version conflict on every one of its ``attempts``.

    Still a :class:`~aether.errors.VersionConflictError`, so code that handles conflicts
    handles this too.
    """

    def __init__(self, actor_id: str, attempted_version: int, current_version: int, attempts: int) -> None:
        super().__init__(actor_id, attempted_version, current_version)
        self.attempts = attempts
        self.args = (f"{self.args[0]}; gave up after {attempts} attempts",)

    def __reduce__(self) -> tuple[type[VersionConflictError], tuple[str, int, int, int]]:  # type: ignore[override]
        return (type(self), (self.actor_id, self.attempted_version, self.current_version, self.attempts))
