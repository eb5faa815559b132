"""The event model: :class:`Event`, :class:`ActorSnapshot` and the store protocols."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import msgspec

from aether._ids import new_id

__all__ = ["ActorSnapshot", "Event", "EventStore", "SnapshotStore", "utc_now"]


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Event(msgspec.Struct, frozen=True):
    """One immutable fact in an actor's history.

    Args:
        event_type: what happened, e.g. ``"Deposited"``.
        actor_id: the actor (aggregate) the event belongs to; any non-empty string.
        version: position in the actor's history, starting at 1, consecutive.
        data: JSON-compatible payload.
        metadata: string key/value pairs (correlation and causation ids live here).
        id: unique id, generated when omitted; used for idempotent retries.
        timestamp: when the event was created (UTC), now when omitted.
    """

    event_type: str
    actor_id: str
    version: int
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    id: str = msgspec.field(default_factory=new_id)
    timestamp: datetime = msgspec.field(default_factory=utc_now)


class ActorSnapshot(msgspec.Struct, frozen=True):
    """An actor's state as of ``version`` (the state after applying events 1..version)."""

    actor_id: str
    version: int
    state: Any
    timestamp: datetime = msgspec.field(default_factory=utc_now)


@runtime_checkable
class EventStore(Protocol):
    """Append-only, per-actor event histories with optimistic concurrency.

    Implementations raise :class:`~aether.errors.VersionConflictError` when a version is not
    latest+1, :class:`~aether.errors.InvalidInputError` subclasses on bad input, and other
    :class:`~aether.errors.AetherError` subclasses on infrastructure failures.
    """

    async def save_event(self, event: Event) -> None:
        """Append ``event``; its version must be the actor's latest version + 1."""
        ...

    async def save_events(self, events: Sequence[Event]) -> None:
        """Append consecutive events of one actor atomically: all are stored or none."""
        ...

    async def get_events(self, actor_id: str, from_version: int = 0) -> list[Event]:
        """The actor's events with ``version >= from_version``, ascending."""
        ...

    def iter_events(self, actor_id: str, from_version: int = 0) -> AsyncIterator[Event]:
        """The same as :meth:`get_events`, streamed page by page."""
        ...

    async def get_latest_version(self, actor_id: str) -> int:
        """The actor's latest version, 0 if it has no events."""
        ...


@runtime_checkable
class SnapshotStore(Protocol):
    """Stores the latest snapshot per actor (highest version wins)."""

    async def save_snapshot(self, snapshot: ActorSnapshot) -> None:
        """Store ``snapshot`` unless a snapshot with a higher version is already stored."""
        ...

    async def get_latest_snapshot(self, actor_id: str) -> ActorSnapshot | None:
        """The snapshot with the highest version, or ``None``."""
        ...
