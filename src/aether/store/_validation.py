"""Input checks shared by the stores (cheap: they run on every append).

Both stores run the same checks in the same order, before any I/O, so a bad call fails the same
way in memory as on JetStream (the conformance suite in :mod:`aether.testing.conformance` checks it).
"""

from __future__ import annotations

from collections.abc import Sequence

from aether.codec import encode_event
from aether.errors import EventTooLargeError, InvalidBatchError, InvalidInputError, InvalidVersionError
from aether.event import ActorSnapshot, Event
from aether.names import MAX_ACTOR_ID_LENGTH, validate_actor_id
from aether.store.options import DEFAULT_MAX_EVENT_SIZE

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "MAX_BATCH_SIZE",
    "check_actor_id",
    "check_batch",
    "check_event",
    "check_from_version",
    "check_snapshot",
    "encode_within",
]

MAX_BATCH_SIZE = 1000


def _what(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


def check_event(event: object) -> None:
    """Raise InvalidInputError (and subclasses) for anything but a usable :class:`Event`."""
    if type(event) is not Event and not isinstance(event, Event):
        raise InvalidInputError(f"expected an aether.Event, got {_what(event)}")
    version = event.version
    if type(version) is not int or version < 1:
        raise InvalidVersionError(f"version must be an int >= 1, got {version!r} (actor {event.actor_id!r})")
    actor_id = event.actor_id
    if type(actor_id) is not str or not actor_id or len(actor_id) > MAX_ACTOR_ID_LENGTH:
        validate_actor_id(actor_id)  # raises InvalidNameError naming the rule broken


def check_snapshot(snapshot: object) -> None:
    """Raise InvalidInputError (and subclasses) for anything but a usable :class:`ActorSnapshot`."""
    if not isinstance(snapshot, ActorSnapshot):
        raise InvalidInputError(f"expected an aether.ActorSnapshot, got {_what(snapshot)}")
    version = snapshot.version
    if type(version) is not int or version < 1:
        raise InvalidVersionError(f"version must be an int >= 1, got {version!r} (actor {snapshot.actor_id!r})")
    validate_actor_id(snapshot.actor_id)


def check_actor_id(actor_id: object) -> None:
    """Raise InvalidNameError for an actor id that is not a non-empty str of allowed length."""
    if type(actor_id) is not str or not actor_id or len(actor_id) > MAX_ACTOR_ID_LENGTH or not actor_id.isascii():
        validate_actor_id(actor_id)


def check_batch(events: object) -> None:
    """Raise for a non-sequence, empty, mixed-actor, oversized or non-consecutive batch."""
    if not isinstance(events, Sequence) or isinstance(events, (str, bytes)):
        raise InvalidBatchError(f"save_events needs a sequence (list or tuple) of events, got {_what(events)}")
    if not events:
        raise InvalidBatchError("save_events needs at least one event")
    if len(events) > MAX_BATCH_SIZE:
        raise InvalidBatchError(f"a batch holds at most {MAX_BATCH_SIZE} events, got {len(events)}")
    for index, event in enumerate(events):
        if not isinstance(event, Event):
            raise InvalidInputError(f"save_events: item {index} is not an aether.Event but {_what(event)}")
    first = events[0]
    check_event(first)
    actor_id = first.actor_id
    expected = first.version
    if len(events) > 1 and len({e.id for e in events}) != len(events):
        raise InvalidBatchError(f"a batch must not hold the same event id twice (actor {actor_id!r})")
    for event in events:
        if event.actor_id != actor_id:
            raise InvalidBatchError(
                f"a batch must hold events of one actor: {actor_id!r} and {event.actor_id!r}"
            )
        if event.version != expected:
            raise InvalidVersionError(
                f"batch versions must be consecutive: expected {expected}, got {event.version!r}"
            )
        expected += 1


def check_from_version(from_version: object) -> None:
    """Raise InvalidVersionError for a negative or non-int ``from_version``."""
    if type(from_version) is not int or from_version < 0:
        raise InvalidVersionError(f"from_version must be an int >= 0, got {from_version!r}")


def encode_within(event: Event, limit: int) -> bytes:
    """The encoded event, or EventTooLargeError when it is larger than ``limit`` bytes.

    Raises:
        EventTooLargeError: the encoded event exceeds ``limit``.
        InvalidInputError: the event cannot be encoded.
    """
    payload = encode_event(event)
    if len(payload) > limit:
        raise EventTooLargeError(event.actor_id, len(payload), limit)
    return payload
