"""The versioned wire encoding of events and snapshots.

Every stored payload starts with a two-byte header: ``0xAE`` and a format byte. Format 1 of
an event (``0xAE 0x01``) is the MessagePack map of the :class:`~aether.event.Event` fields;
format 1 of a snapshot (``0xAE 0x81``) is a MessagePack map of the snapshot fields plus the
stream sequence of the snapshot's last event. A later format gets a new format byte, and the
decoder keeps reading every older one, so stored events never need rewriting.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from aether.errors import CorruptEventError, InvalidInputError
from aether.event import ActorSnapshot, Event, decode_trusted

__all__ = [
    "EVENT_FORMAT_V1",
    "SNAPSHOT_FORMAT_V1",
    "SnapshotRecord",
    "decode_event",
    "decode_snapshot",
    "encode_event",
    "encode_snapshot",
]

EVENT_FORMAT_V1 = b"\xae\x01"
SNAPSHOT_FORMAT_V1 = b"\xae\x81"


class SnapshotRecord(msgspec.Struct, frozen=True):
    """A snapshot as stored: the snapshot plus the stream sequence of its last event (0 if unknown)."""

    actor_id: str
    version: int
    state: Any
    timestamp: datetime
    sequence: int = 0

    def to_snapshot(self) -> ActorSnapshot:
        """The stored snapshot (as stored: not checked again, see :func:`~aether.event.decode_trusted`)."""
        return decode_trusted(self._build, None)

    def _build(self, _: None) -> ActorSnapshot:
        return ActorSnapshot(self.actor_id, self.version, self.state, self.timestamp)


_encoder = msgspec.msgpack.Encoder()
_encode = _encoder.encode
_decode_event_body = msgspec.msgpack.Decoder(Event).decode
_snapshot_decoder = msgspec.msgpack.Decoder(SnapshotRecord)
_MSGSPEC_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)
_SLICE_LIMIT = 16 * 1024


def encode_event(event: Event) -> bytes:
    """Encode an event in the current format.

    Raises:
        InvalidInputError: ``data`` or ``metadata`` hold values that cannot be encoded.
    """
    try:
        return EVENT_FORMAT_V1 + _encode(event)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(f"event for actor {event.actor_id!r} cannot be encoded: {exc}") from exc


def decode_event(payload: bytes, *, stream: str | None = None, sequence: int | None = None,
                 actor_id: str | None = None) -> Event:
    """Decode a stored event of any known format.

    Raises:
        CorruptEventError: the payload is not an Aether event (names actor, stream and sequence).
    """
    if payload[:2] == EVENT_FORMAT_V1:
        try:
            # slicing small bytes is faster than a memoryview (msgspec); large ones are not copied
            body = payload[2:] if len(payload) <= _SLICE_LIMIT else memoryview(payload)[2:]
            event = decode_trusted(_decode_event_body, body)
        except _MSGSPEC_ERRORS as exc:
            raise CorruptEventError(f"undecodable event body: {exc}", actor_id=actor_id, stream=stream,
                                    sequence=sequence) from None
        if event.version < 1:
            raise CorruptEventError(f"stored version {event.version} < 1", actor_id=actor_id,
                                    stream=stream, sequence=sequence)
        return event
    head = bytes(payload[:2])
    reason = "empty payload" if not payload else f"unknown format header {head!r}"
    raise CorruptEventError(f"not an Aether event: {reason}", actor_id=actor_id, stream=stream,
                            sequence=sequence)


def encode_snapshot(snapshot: ActorSnapshot, sequence: int = 0) -> bytes:
    """Encode a snapshot with the stream sequence of its last event.

    Raises:
        InvalidInputError: the state cannot be encoded.
    """
    record = SnapshotRecord(snapshot.actor_id, snapshot.version, snapshot.state, snapshot.timestamp, sequence)
    try:
        return SNAPSHOT_FORMAT_V1 + _encode(record)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(f"snapshot of actor {snapshot.actor_id!r} cannot be encoded: {exc}") from exc


def decode_snapshot(payload: bytes, *, stream: str | None = None, sequence: int | None = None,
                    actor_id: str | None = None) -> SnapshotRecord:
    """Decode a stored snapshot.

    Raises:
        CorruptEventError: the payload is not an Aether snapshot.
    """
    if payload[:2] != SNAPSHOT_FORMAT_V1:
        raise CorruptEventError("not an Aether snapshot", actor_id=actor_id, stream=stream, sequence=sequence)
    try:
        record = _snapshot_decoder.decode(memoryview(payload)[2:])
    except _MSGSPEC_ERRORS as exc:
        raise CorruptEventError(f"undecodable snapshot: {exc}", actor_id=actor_id, stream=stream,
                                sequence=sequence) from None
    return record
