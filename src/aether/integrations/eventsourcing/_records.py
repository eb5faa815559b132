"""The wire form of the messages in an application's stream.

Two kinds, tagged, encoded with msgspec MessagePack (compact, and the state bytes stay bytes):

* an event: originator id (text, and whether it was a UUID), version, topic, state;
* a tracking record: upstream application name and notification id.
"""

from __future__ import annotations

from uuid import UUID

import msgspec
from eventsourcing.persistence import Notification, StoredEvent

__all__ = ["EventRecord", "TrackingRecord", "decode_record", "encode_event", "encode_tracking", "originator_of",
           "to_notification", "to_stored_event"]


class EventRecord(msgspec.Struct, array_like=True, tag="e", frozen=True):
    originator: str
    is_uuid: bool
    version: int
    topic: str
    state: bytes


class TrackingRecord(msgspec.Struct, array_like=True, tag="t", frozen=True):
    application_name: str
    notification_id: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(EventRecord | TrackingRecord)


def encode_event(event: StoredEvent) -> bytes:
    originator = event.originator_id
    return _encoder.encode(EventRecord(str(originator), isinstance(originator, UUID), event.originator_version,
                                       event.topic, event.state))


def encode_tracking(application_name: str, notification_id: int) -> bytes:
    return _encoder.encode(TrackingRecord(application_name, notification_id))


def decode_record(data: bytes) -> EventRecord | TrackingRecord:
    """Raises msgspec.DecodeError / ValidationError on a foreign message."""
    return _decoder.decode(data)


def originator_of(record: EventRecord) -> UUID | str:
    """The record's originator id, a UUID again when it was one."""
    return UUID(record.originator) if record.is_uuid else record.originator


def to_stored_event(record: EventRecord, originator: UUID | str) -> StoredEvent:
    return StoredEvent(originator_id=originator, originator_version=record.version, topic=record.topic,
                       state=record.state)


def to_notification(record: EventRecord, notification_id: int, originator: UUID | str) -> Notification:
    return Notification(id=notification_id, originator_id=originator, originator_version=record.version,
                        topic=record.topic, state=record.state)
