"""Subjects and the message format of :class:`~aether.bus.NATSEventBus`.

Subject of an event published in namespace ``N`` with type ``T``::

    <prefix>.<tokens of N>.<encode_token(T)>        e.g. aetherbus.tenant-a.orders.OrderPlaced

``prefix`` defaults to ``aetherbus`` (distinct from the store's ``aether.<stream>…``
subjects, so JetStream streams never capture bus traffic). Namespace tokens are already
subject-safe; the event type is encoded with :func:`aether.names.encode_token` (an empty type
becomes ``_``, which the encoder never produces otherwise). A subscription pattern ``P`` maps
to exactly one NATS subject filter: ``<prefix>.P.*``, or for ``P = Q.>`` ``<prefix>.Q.*.>``
(at least one namespace token before the type token).

Message bodies. Every message starts with the same 18-byte header: two magic bytes naming the
wire version, the publishing node's id and a sequence number::

    v1, one event:        0xAE 0xB1 | node id (8) | sequence (8, big-endian) | aether.codec event bytes
    v2, a batch:          0xAE 0xB2 | node id (8) | first sequence (8)       | MessagePack array of N events
    v2, a traced batch:   0xAE 0xB3 | node id (8) | first sequence (8)       | MessagePack [events, contexts]

The node id is random per bus instance; the sequence counts the events that node published
in the message's namespace (1, 2, 3, …); a batch of N events carries the sequences
``first .. first+N-1``. A receiver skips its own node's messages (they were already delivered
locally) and detects lost messages as jumps in ``(node, namespace)`` sequences.

A batch holds events of ONE subject (namespace and event type), in publish order. Its array
elements are the MessagePack maps of :mod:`aether.codec` event format 1 (the codec bytes
without their two-byte format header); the publisher only batches format-1 events, so a
future codec format travels as v1 messages until a new wire version names it. A traced batch
(sent only while tracing records spans) is a two-element array: the events, then one map of
trace-context headers (W3C ``traceparent``…) per event, empty when there is none. A v1
message carries its trace context in NATS headers, as before. Version 1 is what nodes of
earlier releases send and read: a new node reads all three, an old node counts v2 messages
as invalid (and the events in them as missed).
"""

from __future__ import annotations

import struct

import msgspec

from aether.errors import CorruptEventError, InvalidInputError, InvalidNameError
from aether.event import Event
from aether.names import encode_token, validate_namespace, validate_subject_prefix

__all__ = [
    "BATCH",
    "BATCH_OVERHEAD",
    "DEFAULT_SUBJECT_PREFIX",
    "HEADER_SIZE",
    "MAGIC",
    "MAGIC_BATCH",
    "MAGIC_TRACED_BATCH",
    "SINGLE",
    "TRACED_BATCH",
    "context_size",
    "decode_batch",
    "pack_batch",
    "MAX_EVENT_TYPE_TOKEN",
    "ORIGIN",
    "check_bus_prefix",
    "event_subject",
    "namespace_of_subject",
    "pack_header",
    "pattern_subject",
]

DEFAULT_SUBJECT_PREFIX = "aetherbus"
MAGIC = b"\xae\xb1"  # v1: one event
MAGIC_BATCH = b"\xae\xb2"  # v2: a batch of events
MAGIC_TRACED_BATCH = b"\xae\xb3"  # v2: a batch of events with their trace contexts
SINGLE, BATCH, TRACED_BATCH = MAGIC[1], MAGIC_BATCH[1], MAGIC_TRACED_BATCH[1]  # the second byte
HEADER_SIZE = 18
BATCH_OVERHEAD = HEADER_SIZE + 6  # header, the outer array of a traced batch and the array header
MAX_EVENT_TYPE_TOKEN = 1024  # keeps the NATS protocol line far below the server's 4 KiB limit

_header = struct.Struct(">10sQ")
pack_header = _header.pack  # pack_header(MAGIC + node_id, sequence) -> 18 bytes
#: ``ORIGIN.unpack_from(data, 2) -> (node id, sequence)`` of a bus message
ORIGIN = struct.Struct(">8sQ")


_encode = msgspec.msgpack.Encoder().encode
_decode_events = msgspec.msgpack.Decoder(list[Event]).decode
_decode_traced = msgspec.msgpack.Decoder(tuple[list[Event], list[dict[str, str]]]).decode
_MSGSPEC_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


def context_size(context: dict[str, str]) -> int:
    """An upper bound of the bytes a trace context adds to a traced batch."""
    return sum(len(k) + len(v) for k, v in context.items()) * 2 + 8


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 65536:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def pack_batch(node: bytes, first: int, payloads: list[bytes], contexts: list[dict[str, str]] | None) -> bytes:
    """A v2 message: the events (codec format-1 bytes only: later formats travel alone) with sequences from ``first``.

    ``contexts`` (one trace-context map per event, empty when none) makes it a traced batch.
    """
    events = b"".join([_array_header(len(payloads)), *[p[2:] for p in payloads]])
    if contexts is None:
        return _header.pack(MAGIC_BATCH + node, first) + events
    return _header.pack(MAGIC_TRACED_BATCH + node, first) + b"\x92" + events + _encode(contexts)


def decode_batch(data: bytes, kind: int) -> tuple[list[Event], list[dict[str, str]] | None]:
    """The events of a v2 message (and their trace contexts for a traced batch).

    Raises:
        CorruptEventError: the body is not a batch of valid events.
    """
    body = memoryview(data)[HEADER_SIZE:]
    contexts: list[dict[str, str]] | None = None
    try:
        if kind == BATCH:
            events = _decode_events(body)
        else:
            events, contexts = _decode_traced(body)
    except _MSGSPEC_ERRORS as exc:
        raise CorruptEventError(f"undecodable bus batch: {exc}") from None
    if not events or (contexts is not None and len(contexts) != len(events)):
        raise CorruptEventError("malformed bus batch")
    for event in events:
        if event.version < 1:
            raise CorruptEventError(f"bus batch holds version {event.version} < 1")
    return events, contexts


def check_bus_prefix(prefix: object) -> str:
    """Validate a bus subject prefix.

    Raises:
        InvalidNameError: not dot-separated ``A-Z a-z 0-9 _ -`` tokens, or exactly ``aether``
            (the store's default prefix: bus messages must never land in a stream).
    """
    prefix = validate_subject_prefix(prefix)
    if prefix == "aether":
        raise InvalidNameError("the bus subject prefix must differ from the store's ('aether')")
    return prefix


def event_subject(prefix: str, namespace: str, event_type: str) -> str:
    """The subject of an event of ``event_type`` published in the (validated) ``namespace``.

    Raises:
        InvalidInputError: ``event_type`` is not a str or encodes to more than
            :data:`MAX_EVENT_TYPE_TOKEN` characters.
    """
    if not isinstance(event_type, str):
        raise InvalidInputError(f"event_type must be a str, got {type(event_type).__name__}")
    token = encode_token(event_type) if event_type else "_"
    if len(token) > MAX_EVENT_TYPE_TOKEN:
        raise InvalidInputError(f"event type {event_type[:40]!r}… is too long for a bus subject")
    return f"{prefix}.{namespace}.{token}"


def pattern_subject(prefix: str, pattern: str) -> str:
    """The NATS subject filter of a validated subscription pattern."""
    if pattern == ">":
        return f"{prefix}.*.>"
    if pattern.endswith(".>"):
        return f"{prefix}.{pattern[:-2]}.*.>"
    return f"{prefix}.{pattern}.*"


def namespace_of_subject(prefix: str, subject: str) -> str | None:
    """The namespace of a bus subject, or ``None`` when ``subject`` is not a valid bus subject."""
    head = len(prefix) + 1
    cut = subject.rfind(".")
    if cut <= head or not subject.startswith(prefix) or subject[head - 1] != ".":
        return None
    namespace = subject[head:cut]
    try:
        return validate_namespace(namespace)
    except InvalidNameError:
        return None
