"""Input checks shared by the stores (cheap: they run on every append)."""

from __future__ import annotations

from collections.abc import Sequence

from aether.errors import InvalidBatchError, InvalidVersionError
from aether.event import Event
from aether.names import check_event  # moved to the model layer (the bus shares it); re-exported here

__all__ = ["MAX_BATCH_SIZE", "check_batch", "check_event", "check_from_version"]

MAX_BATCH_SIZE = 1000


def check_batch(events: Sequence[Event]) -> None:
    """Raise for an empty, mixed-actor, oversized or non-consecutive batch."""
    if not events:
        raise InvalidBatchError("save_events needs at least one event")
    if len(events) > MAX_BATCH_SIZE:
        raise InvalidBatchError(f"a batch holds at most {MAX_BATCH_SIZE} events, got {len(events)}")
    first = events[0]
    check_event(first)
    actor_id = first.actor_id
    expected = first.version
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


def check_from_version(from_version: int) -> None:
    """Raise InvalidVersionError for a negative or non-int ``from_version``."""
    if type(from_version) is not int or from_version < 0:
        raise InvalidVersionError(f"from_version must be an int >= 0, got {from_version!r}")
