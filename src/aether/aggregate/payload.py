"""Typed event payloads: msgspec Structs that become an event's ``data``.

A payload class names its event type and its schema version::

    class Deposited(EventPayload):
        amount: int

    class Withdrawn(EventPayload):
        event_type = "MoneyWithdrawn"   # stored type name (default: the class name)
        schema_version = 2              # bump when the shape changes; register an upcaster
        amount: int
        reason: str = ""

The schema version travels in the event's metadata under :data:`SCHEMA_KEY` (absent means 1),
so an :class:`~aether.aggregate.Upcasters` registry can bring old payloads up to date on read.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import msgspec

from aether.errors import InvalidInputError

__all__ = ["SCHEMA_KEY", "EventPayload", "decode_payload", "encode_payload", "event_type_of", "schema_version_of"]

SCHEMA_KEY = "aether.schema"
"""Event metadata key holding the payload's schema version (a decimal string; absent means 1)."""

P = TypeVar("P", bound="EventPayload")

_msgpack_encode = msgspec.msgpack.encode
_msgpack_decode = msgspec.msgpack.decode


class EventPayload(msgspec.Struct, frozen=True, kw_only=True):
    """Base of typed event payloads (frozen, keyword-only msgspec Structs).

    Class attributes:
        event_type: the stored event type (default: the class name).
        schema_version: the payload's schema version (default 1).
    """

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_type" not in cls.__dict__:
            cls.event_type = cls.__name__
        if type(cls.schema_version) is not int or cls.schema_version < 1:
            raise InvalidInputError(f"{cls.__name__}.schema_version must be an int >= 1")
        if not isinstance(cls.event_type, str) or not cls.event_type:
            raise InvalidInputError(f"{cls.__name__}.event_type must be a non-empty str")


def event_type_of(payload: EventPayload | type[EventPayload]) -> str:
    """The stored event type of a payload or payload class."""
    return payload.event_type


def schema_version_of(metadata: dict[str, str]) -> int:
    """The schema version recorded in event metadata (1 when absent or unreadable)."""
    raw = metadata.get(SCHEMA_KEY)
    if raw is None:
        return 1
    try:
        value = int(raw)
    except ValueError:
        return 1
    return value if value >= 1 else 1


def encode_payload(payload: EventPayload) -> dict[str, Any]:
    """The payload as ``data`` of JSON values (see :mod:`aether.event`): datetimes, UUIDs and
    decimals become strings, bytes base64 strings, Structs dicts, tuples and sets lists (the
    payload's annotations turn them back on decode).

    Raises:
        InvalidInputError: the payload holds a value that cannot be encoded (or, when the event is
            built, one that is no JSON value: NaN, infinities).
    """
    try:
        # to_builtins keeps tuples; a MessagePack round trip (in C) makes them lists like JSON would
        data = _msgpack_decode(_msgpack_encode(msgspec.to_builtins(payload)))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(f"{type(payload).__name__} cannot be encoded: {exc}") from exc
    assert isinstance(data, dict)
    return data


def decode_payload(data: dict[str, Any], payload_type: type[P]) -> P:
    """Rebuild a typed payload from stored ``data``.

    Raises:
        msgspec.ValidationError: the data does not fit ``payload_type`` (callers translate it).
    """
    return msgspec.convert(data, payload_type)
