"""Aether: distributed event-sourcing primitives for Python, powered by NATS JetStream."""

from aether.bus import EventBroadcaster, EventBus, NATSEventBus, Subscription
from aether.errors import (
    AetherError,
    AetherTimeoutError,
    BusClosedError,
    ClusterError,
    CorruptEventError,
    EventTooLargeError,
    FencedError,
    InvalidBatchError,
    InvalidInputError,
    InvalidNameError,
    InvalidVersionError,
    NatsConnectionError,
    NatsServerError,
    NotOwnerError,
    PermissionDeniedError,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
)
from aether.event import ActorSnapshot, Event, EventStore, SnapshotStore

__version__ = "0.1.0"

__all__ = [
    "ActorSnapshot",
    "AetherError",
    "AetherTimeoutError",
    "BusClosedError",
    "ClusterError",
    "CorruptEventError",
    "Event",
    "EventBroadcaster",
    "EventBus",
    "EventStore",
    "EventTooLargeError",
    "FencedError",
    "InvalidBatchError",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidVersionError",
    "NATSEventBus",
    "NatsConnectionError",
    "NatsServerError",
    "NotOwnerError",
    "PermissionDeniedError",
    "SnapshotStore",
    "StoreError",
    "StoreUnavailableError",
    "Subscription",
    "VersionConflictError",
    "__version__",
]
