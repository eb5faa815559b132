"""InMemoryEventStore: the full EventStore/SnapshotStore contract without I/O."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from aether.codec import decode_snapshot, encode_snapshot
from aether.errors import DuplicateEventIdError, EventTooLargeError, InvalidInputError, VersionConflictError
from aether.event import ActorHead, ActorSnapshot, Event
from aether.store import _validation  # the checks both stores share

__all__ = ["InMemoryEventStore"]


class InMemoryEventStore:
    """An event and snapshot store held in process memory.

    Same semantics as :class:`~aether.store.JetStreamEventStore`, bad input and limits included:
    every event is encoded as JetStream would store it and refused when larger than
    ``max_event_size`` (default :data:`~aether.store.options.DEFAULT_MAX_EVENT_SIZE`, what a
    default nats-server accepts). The ``Event`` objects themselves are kept (events are immutable;
    do not change their ``data`` dicts after saving). An event id can be stored once (JetStream
    de-duplicates ids; here they are remembered for the store's lifetime).

    Every operation completes without yielding to the event loop between its check and its write,
    so it is safe under any number of concurrent asyncio tasks. Data lives only as long as the object.

    Raises:
        InvalidInputError: ``max_event_size`` is not an int >= 64.
    """

    def __init__(self, *, max_event_size: int = _validation.DEFAULT_MAX_EVENT_SIZE) -> None:
        if type(max_event_size) is not int or max_event_size < 64:
            raise InvalidInputError(f"max_event_size must be an int >= 64, got {max_event_size!r}")
        self.max_event_size = max_event_size
        self._events: dict[str, list[Event]] = {}
        self._ids: dict[str, tuple[str, int]] = {}
        self._snapshots: dict[str, ActorSnapshot] = {}

    def _check_ids(self, events: Sequence[Event], current: int) -> None:
        ids = self._ids
        for event in events:
            where = ids.get(event.id)
            if where is not None:
                raise DuplicateEventIdError(event.actor_id, event.version, current, event.id, *where)

    async def save_event(self, event: Event) -> None:
        """Append ``event``.

        Raises:
            VersionConflictError: ``event.version`` is not the latest version + 1.
            DuplicateEventIdError: the event's id is already stored (at another version or actor).
            InvalidInputError: not an Event; InvalidVersionError / InvalidNameError: bad version or actor id.
            EventTooLargeError: the encoded event exceeds ``max_event_size``.
        """
        _validation.check_event(event)
        _validation.encode_within(event, self.max_event_size)  # the size JetStream would see; unencodable values
        actor_id = event.actor_id
        version = event.version
        history = self._events.get(actor_id)
        current = len(history) if history else 0
        if version != current + 1:
            if history and version <= current and history[version - 1].id == event.id:
                return  # idempotent retry of an event already stored
            raise VersionConflictError(actor_id, version, current)
        where = self._ids.get(event.id)
        if where is not None:
            raise DuplicateEventIdError(actor_id, version, current, event.id, *where)
        if history is None:
            self._events[actor_id] = [event]
        else:
            history.append(event)
        self._ids[event.id] = (actor_id, version)

    async def save_events(self, events: Sequence[Event]) -> None:
        """Append consecutive events of one actor atomically.

        Raises:
            VersionConflictError: the first version is not the latest version + 1 (nothing stored).
            DuplicateEventIdError: an event's id is already stored (nothing stored).
            InvalidBatchError: not a sequence of Events, empty, mixed actors or too many events.
            InvalidVersionError: versions < 1 or not consecutive.
            EventTooLargeError: an encoded event exceeds ``max_event_size`` (nothing stored).
        """
        _validation.check_batch(events)
        limit = self.max_event_size
        for event in events:
            _validation.encode_within(event, limit)
        first = events[0]
        history = self._events.get(first.actor_id)
        current = len(history) if history else 0
        if first.version != current + 1:
            if (history and first.version + len(events) - 1 <= current
                    and all(history[e.version - 1].id == e.id for e in events)):
                return
            raise VersionConflictError(first.actor_id, first.version, current)
        self._check_ids(events, current)
        if history is None:
            self._events[first.actor_id] = list(events)
        else:
            history.extend(events)
        for event in events:
            self._ids[event.id] = (event.actor_id, event.version)

    async def get_events(self, actor_id: str, from_version: int = 0) -> list[Event]:
        """The actor's events with ``version >= from_version``, ascending.

        Raises:
            InvalidNameError: bad actor id; InvalidVersionError: bad ``from_version``.
        """
        _validation.check_actor_id(actor_id)
        _validation.check_from_version(from_version)
        history = self._events.get(actor_id)
        if not history:
            return []
        return history[max(from_version, 1) - 1 :]

    async def iter_events(self, actor_id: str, from_version: int = 0) -> AsyncIterator[Event]:
        """Stream the actor's events with ``version >= from_version`` (same errors as :meth:`get_events`)."""
        for event in await self.get_events(actor_id, from_version):
            yield event

    async def get_latest_version(self, actor_id: str) -> int:
        """The actor's latest version (0 when it has no events).

        Raises:
            InvalidNameError: bad actor id.
        """
        _validation.check_actor_id(actor_id)
        history = self._events.get(actor_id)
        return len(history) if history else 0

    async def save_snapshot(self, snapshot: ActorSnapshot) -> None:
        """Keep ``snapshot`` unless a newer one is stored.

        Raises:
            InvalidInputError: not an ActorSnapshot; InvalidVersionError / InvalidNameError: bad fields.
            EventTooLargeError: the encoded snapshot exceeds ``max_event_size``.
        """
        _validation.check_snapshot(snapshot)
        payload = encode_snapshot(snapshot)
        if len(payload) > self.max_event_size:
            raise EventTooLargeError(snapshot.actor_id, len(payload), self.max_event_size)
        current = self._snapshots.get(snapshot.actor_id)
        if current is None or snapshot.version >= current.version:
            self._snapshots[snapshot.actor_id] = decode_snapshot(payload).to_snapshot()

    async def get_latest_snapshot(self, actor_id: str) -> ActorSnapshot | None:
        """The snapshot with the highest version, or ``None``.

        Raises:
            InvalidNameError: bad actor id.
        """
        _validation.check_actor_id(actor_id)
        return self._snapshots.get(actor_id)

    async def get_heads(self, actor_ids: Sequence[str]) -> dict[str, ActorHead]:
        """Each actor's latest version and newest snapshot (see :class:`~aether.event.HeadReader`).

        Raises:
            InvalidNameError: a bad actor id.
        """
        ids = list(dict.fromkeys(actor_ids))
        for actor_id in ids:
            _validation.check_actor_id(actor_id)
        return {actor_id: ActorHead(len(self._events.get(actor_id) or ()), self._snapshots.get(actor_id))
                for actor_id in ids}

    async def actor_ids(self) -> list[str]:
        """All actor ids with at least one event."""
        return list(self._events)

    async def aclose(self) -> None:
        """Nothing to release; present for symmetry with the JetStream store."""

    async def __aenter__(self) -> InMemoryEventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
