"""Aether: distributed event-sourcing primitives for Python, powered by NATS JetStream."""

from aether import errors
from aether.bus import EventBroadcaster, EventBus, NATSEventBus, Subscription
from aether.errors import *  # noqa: F403  (the whole error tree: aether.errors.__all__)
from aether.event import ActorHead, ActorSnapshot, Event, EventStore, HeadReader, SnapshotStore

__version__ = "0.1.0"

__all__ = [
    "ActorHead",
    "ActorSnapshot",
    "Event",
    "EventBroadcaster",
    "EventBus",
    "EventStore",
    "HeadReader",
    "NATSEventBus",
    "SnapshotStore",
    "Subscription",
    "__version__",
]
__all__ += errors.__all__  # every error of the tree is importable from aether
