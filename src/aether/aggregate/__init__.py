"""Aggregates: actor state rebuilt from events, and a repository that runs commands on it.

See ``docs/aggregates.md``. The pieces:

* :class:`Aggregate` and :func:`applies`: state, handlers and :meth:`Aggregate.record`.
* :class:`EventPayload`: optional typed payloads (msgspec Structs) with a schema version.
* :class:`Upcasters`: ``(event_type, schema_version) → function`` so old events are read
  in the newest shape without rewriting them.
* :class:`Repository`: load (snapshot + tail), execute with conflict retry and idempotency,
  snapshot every N events in the background.
"""

from aether.aggregate.base import COMMAND_KEY, Aggregate, applies
from aether.aggregate.errors import (
    AggregateError,
    ConflictRetriesExhaustedError,
    EventSchemaError,
    UnknownEventError,
)
from aether.aggregate.payload import SCHEMA_KEY, EventPayload, decode_payload, encode_payload
from aether.aggregate.repository import CommandResult, Repository, RepositoryStats
from aether.aggregate.upcast import Upcasters, UpcastFunction

__all__ = [
    "COMMAND_KEY",
    "SCHEMA_KEY",
    "Aggregate",
    "AggregateError",
    "CommandResult",
    "ConflictRetriesExhaustedError",
    "EventPayload",
    "EventSchemaError",
    "Repository",
    "RepositoryStats",
    "UnknownEventError",
    "UpcastFunction",
    "Upcasters",
    "applies",
    "decode_payload",
    "encode_payload",
]
