"""The event model: :class:`Event`, :class:`ActorSnapshot` and the store protocols.

One value model, enforced when an event or snapshot is built (so no store can ever acknowledge
an event that would not read back): :class:`Event` and :class:`ActorSnapshot` check their fields
in ``__post_init__`` and raise :class:`~aether.errors.InvalidInputError` naming the field.

A *JSON value* is ``None``, ``bool``, ``int`` (within MessagePack's range, -2**63 .. 2**64-1),
finite ``float``, ``str`` (valid Unicode: no lone surrogates), ``list`` of JSON values, or
``dict`` with ``str`` keys and JSON values, nested at most :data:`MAX_DEPTH` deep. Anything else
(``object()``, sets, tuples, bytes, datetimes, NaN, infinities, non-``str`` keys) is refused, never
converted: a tuple would read back as a list, a set or a datetime not at all, NaN never equal.
``str``/``int``/``float``/``dict``/``list`` subclasses (enums, ``OrderedDict``) are accepted: they
read back equal, as the plain type.

Events decoded from a store are not checked again (:func:`decode_trusted`: msgspec typed decoding
already guarantees the shape, and an event stored by an older version must stay readable).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from threading import get_ident
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec

from aether._ids import new_id
from aether.errors import InvalidInputError, InvalidNameError, InvalidVersionError

__all__ = ["MAX_DEPTH", "ActorHead", "ActorSnapshot", "Event", "EventStore", "HeadReader", "SnapshotStore",
           "decode_trusted", "utc_now"]

T = TypeVar("T")

MAX_DEPTH = 64
"""How deeply lists and dicts may nest in ``data``, ``state`` (deeper is refused)."""

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_ALLOWED = "None, bool, int, float, str, list, or dict with str keys"


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


# The thread that is decoding stored events right now (0: none). A global read costs far less
# than a thread-local; it is safe because a thread skips the checks only when the value is its
# own id, which only that thread sets, and clears before it returns.
_trusted_thread = 0


def decode_trusted(decode: Callable[[Any], T], payload: Any) -> T:
    """``decode(payload)`` with the checks of :class:`Event` / :class:`ActorSnapshot` skipped.

    For decoders of stored events only: msgspec calls ``__post_init__`` on decode, typed decoding
    already guarantees the shape, and an event stored by an older version must stay readable as
    it was stored. Never for input from users.
    """
    global _trusted_thread
    me = get_ident()
    _trusted_thread = me
    try:
        return decode(payload)
    finally:
        if _trusted_thread == me:
            _trusted_thread = 0


def _where(path: str, key: object) -> str:
    return f"{path}[{key!r}]"


def _bad(path: str, value: object, why: str | None = None) -> InvalidInputError:
    reason = why or f"{type(value).__name__} is not a JSON value (allowed: {_ALLOWED})"
    return InvalidInputError(f"{path}: {reason}"[:500])


def _str_ok(value: str) -> bool:
    """Whether a (non-ASCII) str can be encoded as UTF-8 (no lone surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


# ---- the fast checks: no paths are built, True/False only -----------------------------------------
# _dict_ok and _list_ok repeat the per-value checks on purpose: every event's data passes here, and
# a shared per-value helper would add one Python call per value to the append path.
def _dict_ok(data: dict[Any, Any], depth: int) -> bool:
    if depth > MAX_DEPTH:
        return False
    for key, value in data.items():
        if (type(key) is not str or not key.isascii()) and not (isinstance(key, str) and _str_ok(key)):
            return False
        kind = type(value)
        if kind is str:
            if value.isascii() or _str_ok(value):
                continue
            return False
        if kind is int:
            if _INT_MIN <= value <= _INT_MAX:
                continue
            return False
        if kind is float:
            if value - value == 0.0:  # finite (NaN and infinities give NaN)
                continue
            return False
        if value is None or kind is bool:
            continue
        if kind is dict:
            if _dict_ok(value, depth + 1):
                continue
            return False
        if kind is list:
            if _list_ok(value, depth + 1):
                continue
            return False
        if not _other_ok(value, depth):
            return False
    return True


def _list_ok(items: list[Any], depth: int) -> bool:
    if depth > MAX_DEPTH:
        return False
    for value in items:
        kind = type(value)
        if kind is str:
            if value.isascii() or _str_ok(value):
                continue
            return False
        if kind is int:
            if _INT_MIN <= value <= _INT_MAX:
                continue
            return False
        if kind is float:
            if value - value == 0.0:
                continue
            return False
        if value is None or kind is bool:
            continue
        if kind is dict:
            if _dict_ok(value, depth + 1):
                continue
            return False
        if not _other_ok(value, depth):
            return False
    return True


def _other_ok(value: object, depth: int) -> bool:
    """Containers and subclasses (enums, OrderedDict, …): the rare cases, by isinstance."""
    if isinstance(value, dict):
        return _dict_ok(value, depth + 1)
    if isinstance(value, list):
        return _list_ok(value, depth + 1)
    if isinstance(value, str):
        return value.isascii() or _str_ok(value)
    if isinstance(value, int):  # bool included
        return _INT_MIN <= value <= _INT_MAX
    if isinstance(value, float):
        return value - value == 0.0
    return False


def _value_ok(value: object) -> bool:
    return value is None or _other_ok(value, 0)


# ---- the explanation: run only after a fast check failed, names the first bad place -----------------
def _explain(value: object, path: str, depth: int) -> None:
    """Raise InvalidInputError naming the first value under ``path`` that breaks the model."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if not (value.isascii() or _str_ok(value)):
            raise _bad(path, value, "a str with a lone surrogate cannot be stored as UTF-8")
    elif isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise _bad(path, value, f"int {value} is out of range (-2**63 .. 2**64-1)")
    elif isinstance(value, float):
        if value - value != 0.0:
            raise _bad(path, value, f"{value!r} is not a JSON number (NaN and infinities are refused)")
    elif isinstance(value, (dict, list)):
        if depth >= MAX_DEPTH:
            raise _bad(path, value, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _bad(_where(path, key), key, f"key {key!r} is of type {type(key).__name__}, keys must be str")
                if not (key.isascii() or _str_ok(key)):
                    raise _bad(_where(path, key), key, "a key with a lone surrogate cannot be stored as UTF-8")
                _explain(item, _where(path, key), depth + 1)
        else:
            for index, item in enumerate(value):
                _explain(item, f"{path}[{index}]", depth + 1)
    else:
        raise _bad(path, value)


def _check_data(data: object, field: str) -> None:
    if not isinstance(data, dict):
        raise InvalidInputError(f"{field} must be a dict with str keys, got {type(data).__name__} {data!r}"[:300])
    if not _dict_ok(data, 1):
        _explain(data, field, 0)
        raise InvalidInputError(f"{field} is not a dict of JSON values")  # pragma: no cover - _explain raised


def _check_metadata(metadata: object) -> None:
    if not isinstance(metadata, dict):
        raise InvalidInputError(
            f"Event.metadata must be a dict[str, str], got {type(metadata).__name__} {metadata!r}"[:300])
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"Event.metadata key {key!r} is of type {type(key).__name__}, keys must be str")
        if not isinstance(value, str):
            raise InvalidInputError(
                f"Event.metadata[{key!r}] must be a str, got {type(value).__name__} {value!r}"[:300])
        for text in (key, value):
            if not (text.isascii() or _str_ok(text)):
                raise InvalidInputError(f"Event.metadata[{key!r}]: a str with a lone surrogate cannot be stored")


def _check_str(value: str, path: str) -> None:
    if not (value.isascii() or _str_ok(value)):
        raise InvalidInputError(f"{path}: a str with a lone surrogate cannot be stored as UTF-8")


def _check_name(value: object, field: str) -> None:
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a str, got {type(value).__name__} {value!r}"[:300])
    if not value:
        raise InvalidNameError(f"{field} must not be empty")
    _check_str(value, field)


def _check_version(value: object, field: str) -> None:
    if type(value) is not int:
        raise InvalidVersionError(f"{field} must be an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise InvalidVersionError(f"{field} must be an int >= 1, got {value}")


def _check_timestamp(value: object, field: str) -> None:
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{field} must be a timezone-aware datetime, got {type(value).__name__} {value!r}")
    if value.utcoffset() is None:
        raise InvalidInputError(f"{field} must be timezone-aware (e.g. datetime.now(UTC)), got naive {value!r}")


def _check_id(value: object) -> None:
    _check_name(value, "Event.id")
    assert isinstance(value, str)
    if "\n" in value or "\r" in value:  # it travels in the Nats-Msg-Id header
        raise InvalidInputError(f"Event.id must not hold line breaks, got {value!r}")


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

    def __post_init__(self) -> None:
        """Check every field (see the module docstring for the value model).

        Raises:
            InvalidInputError: a field has the wrong type or value (the message names it);
                ``InvalidVersionError`` for the version, ``InvalidNameError`` for an empty type or id.
        """
        if _trusted_thread and _trusted_thread == get_ident():
            return
        # inline fast checks for the common case; the helpers explain what is wrong
        event_type = self.event_type
        if type(event_type) is not str or not event_type or not event_type.isascii():
            _check_name(event_type, "Event.event_type")
        actor_id = self.actor_id
        if type(actor_id) is not str or not actor_id or not actor_id.isascii():
            _check_name(actor_id, "Event.actor_id")
        version = self.version
        if type(version) is not int or version < 1:
            _check_version(version, "Event.version")
        data = self.data
        if type(data) is not dict or (data and not _dict_ok(data, 1)):
            _check_data(data, "Event.data")
        metadata = self.metadata
        if type(metadata) is not dict:
            _check_metadata(metadata)
        elif metadata:
            for key, value in metadata.items():
                if type(key) is not str or type(value) is not str or not key.isascii() or not value.isascii():
                    _check_metadata(metadata)
                    break
        event_id = self.id
        if type(event_id) is not str or not event_id or "\n" in event_id or "\r" in event_id:
            _check_id(event_id)
        timestamp = self.timestamp
        if type(timestamp) is not datetime or timestamp.tzinfo is not UTC:
            _check_timestamp(timestamp, "Event.timestamp")


class ActorSnapshot(msgspec.Struct, frozen=True):
    """An actor's state as of ``version`` (the state after applying events 1..version).

    ``state`` is any JSON value (see the module docstring). Checked when built.

    Raises:
        InvalidInputError: a field has the wrong type or value (the message names it).
    """

    actor_id: str
    version: int
    state: Any
    timestamp: datetime = msgspec.field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if _trusted_thread and _trusted_thread == get_ident():
            return
        _check_name(self.actor_id, "ActorSnapshot.actor_id")
        _check_version(self.version, "ActorSnapshot.version")
        state = self.state
        if not _value_ok(state):
            _explain(state, "ActorSnapshot.state", 0)
            raise InvalidInputError("ActorSnapshot.state is not a JSON value")  # pragma: no cover
        _check_timestamp(self.timestamp, "ActorSnapshot.timestamp")


class ActorHead(msgspec.Struct, frozen=True):
    """An actor's latest stored version (0: no events) and its newest snapshot (or ``None``),
    read together by :meth:`HeadReader.get_heads`."""

    version: int
    snapshot: ActorSnapshot | None = None


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


@runtime_checkable
class HeadReader(Protocol):
    """A store that reads many actors' heads in one go (both stores are): what the
    :class:`~aether.aggregate.Repository` uses to activate a burst of actors cheaply."""

    async def get_heads(self, actor_ids: Sequence[str]) -> dict[str, ActorHead]:
        """Each actor's latest version and newest snapshot; every id is in the result."""
        ...
