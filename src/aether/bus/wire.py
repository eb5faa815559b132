"""Subjects and the message format of :class:`~aether.bus.NATSEventBus`.

Subject of an event published in namespace ``N`` with type ``T``::

    <prefix>.<tokens of N>.<encode_token(T)>        e.g. aetherbus.tenant-a.orders.OrderPlaced

``prefix`` defaults to ``aetherbus`` (distinct from the store's ``aether.<stream>…``
subjects, so JetStream streams never capture bus traffic). Namespace tokens are already
subject-safe; the event type is encoded with :func:`aether.names.encode_token` (an empty type
becomes ``_``, which the encoder never produces otherwise). A subscription pattern ``P`` maps
to exactly one NATS subject filter: ``<prefix>.P.*``, or for ``P = Q.>`` ``<prefix>.Q.*.>``
(at least one namespace token before the type token).

Message body (no NATS headers, so nothing to parse on the hot path)::

    0xAE 0xB1 | node id (8 bytes) | sequence (8 bytes, big-endian) | aether.codec event bytes

The node id is random per bus instance; the sequence counts the events that node published
in the message's namespace (1, 2, 3, …). A receiver skips its own node's messages (they were
already delivered locally) and detects lost messages as jumps in ``(node, namespace)`` sequences.
"""

from __future__ import annotations

import struct

from aether.errors import InvalidInputError, InvalidNameError
from aether.names import encode_token, validate_namespace, validate_subject_prefix

__all__ = [
    "DEFAULT_SUBJECT_PREFIX",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_EVENT_TYPE_TOKEN",
    "ORIGIN",
    "check_bus_prefix",
    "event_subject",
    "namespace_of_subject",
    "pack_header",
    "pattern_subject",
]

DEFAULT_SUBJECT_PREFIX = "aetherbus"
MAGIC = b"\xae\xb1"
HEADER_SIZE = 18
MAX_EVENT_TYPE_TOKEN = 1024  # keeps the NATS protocol line far below the server's 4 KiB limit

_header = struct.Struct(">10sQ")
pack_header = _header.pack  # pack_header(MAGIC + node_id, sequence) -> 18 bytes
#: ``ORIGIN.unpack_from(data, 2) -> (node id, sequence)`` of a bus message
ORIGIN = struct.Struct(">8sQ")


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
