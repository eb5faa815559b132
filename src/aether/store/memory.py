"""InMemoryEventStore: the full EventStore/SnapshotStore contract without I/O."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from aether.errors import VersionConflictError
from aether.event import ActorSnapshot, Event
from aether.store._validation import check_batch, check_event, check_from_version

__all__ = ["InMemoryEventStore"]


class InMemoryEventStore:
    """An event and snapshot store held in process memory.

    Same semantics as :class:`~aether.store.JetStreamEventStore`. Every operation completes
    without yielding to the event loop between its check and its write, so it is safe under
    any number of concurrent asyncio tasks. Data lives only as long as the object.
    """

    def __init__(self) -> None:
        self._events: dict[str, list[Event]] = {}
        self._snapshots: dict[str, ActorSnapshot] = {}

    async def save_event(self, event: Event) -> None:
        """Append ``event``.

        Raises:
            VersionConflictError: ``event.version`` is not the latest version + 1.
            InvalidVersionError: version < 1.
            InvalidNameError: invalid actor id.
        """
        check_event(event)
        history = self._events.get(event.actor_id)
        if history is None:
            if event.version != 1:
                raise VersionConflictError(event.actor_id, event.version, 0)
            self._events[event.actor_id] = [event]
            return
        current = len(history)
        if event.version != current + 1:
            if event.version <= current and history[event.version - 1].id == event.id:
                return  # idempotent retry of an event already stored
            raise VersionConflictError(event.actor_id, event.version, current)
        history.append(event)

    async def save_events(self, events: Sequence[Event]) -> None:
        """Append consecutive events of one actor atomically.

        Raises:
            VersionConflictError: the first version is not the latest version + 1 (nothing stored).
            InvalidBatchError: empty batch, mixed actors or too many events.
            InvalidVersionError: versions < 1 or not consecutive.
        """
        check_batch(events)
        first = events[0]
        history = self._events.setdefault(first.actor_id, [])
        current = len(history)
        if first.version != current + 1:
            if (first.version + len(events) - 1 <= current
                    and all(history[e.version - 1].id == e.id for e in events)):
                return
            if not history:
                del self._events[first.actor_id]
            raise VersionConflictError(first.actor_id, first.version, current)
        history.extend(events)

    async def get_events(self, actor_id: str, from_version: int = 0) -> list[Event]:
        """The actor's events with ``version >= from_version``, ascending."""
        check_from_version(from_version)
        history = self._events.get(actor_id)
        if not history:
            return []
        return history[max(from_version, 1) - 1 :]

    async def iter_events(self, actor_id: str, from_version: int = 0) -> AsyncIterator[Event]:
        """Stream the actor's events with ``version >= from_version``."""
        for event in await self.get_events(actor_id, from_version):
            yield event

    async def get_latest_version(self, actor_id: str) -> int:
        """The actor's latest version (0 when it has no events)."""
        history = self._events.get(actor_id)
        return len(history) if history else 0

    async def save_snapshot(self, snapshot: ActorSnapshot) -> None:
        """Keep ``snapshot`` unless a newer one is stored.

        Raises:
            InvalidVersionError: version < 1.
            InvalidNameError: invalid actor id.
        """
        check_event(snapshot)
        current = self._snapshots.get(snapshot.actor_id)
        if current is None or snapshot.version >= current.version:
            self._snapshots[snapshot.actor_id] = snapshot

    async def get_latest_snapshot(self, actor_id: str) -> ActorSnapshot | None:
        """The snapshot with the highest version, or ``None``."""
        return self._snapshots.get(actor_id)

    async def actor_ids(self) -> list[str]:
        """All actor ids with at least one event."""
        return list(self._events)

    async def aclose(self) -> None:
        """Nothing to release; present for symmetry with the JetStream store."""

    async def __aenter__(self) -> InMemoryEventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
