"""Event store implementations."""

from aether.store.jetstream import JetStreamEventStore
from aether.store.memory import InMemoryEventStore
from aether.store.options import JetStreamOptions

__all__ = ["InMemoryEventStore", "JetStreamEventStore", "JetStreamOptions"]
