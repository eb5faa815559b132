"""Projections and durable catch-up subscriptions: read models that never miss an event.

* :class:`CatchUpSubscription` — every event of a namespace's stream from a position on, then
  live events, in order (an async iterator of :class:`StoredEvent`).
* :class:`Projection` — handlers by event type; :class:`ProjectionRunner` runs one with a
  durable position (KV checkpoint), retries with back-off, a dead-letter stream, metrics,
  optional parallelism across actors, ``rebuild()``, and — given a ``node_id`` — a lease so
  exactly one node of a cluster runs it.

See ``docs/projections.md``.
"""

from aether.projection.checkpoint import Checkpoint, CheckpointStore
from aether.projection.deadletter import DeadLetter, DeadLetterQueue, dead_letter_stream_name
from aether.projection.errors import ProjectionError, ProjectionNotActiveError
from aether.projection.lease import ProjectionLease
from aether.projection.observer import ProjectionObserver
from aether.projection.options import ProjectionOptions, RetryPolicy
from aether.projection.projection import Handler, Projection, RebuildHook
from aether.projection.runner import ProjectionRunner, ProjectionStats
from aether.projection.source import EventSource, StoredEvent
from aether.projection.subscription import CatchUpSubscription

__all__ = [
    "CatchUpSubscription",
    "Checkpoint",
    "CheckpointStore",
    "DeadLetter",
    "DeadLetterQueue",
    "EventSource",
    "Handler",
    "Projection",
    "ProjectionError",
    "ProjectionLease",
    "ProjectionNotActiveError",
    "ProjectionObserver",
    "ProjectionOptions",
    "ProjectionRunner",
    "ProjectionStats",
    "RebuildHook",
    "RetryPolicy",
    "StoredEvent",
    "dead_letter_stream_name",
]
