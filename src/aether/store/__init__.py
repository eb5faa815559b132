"""Event store implementations."""

from aether.store._history import HistoryStats
from aether.store.jetstream import JetStreamEventStore
from aether.store.memory import InMemoryEventStore
from aether.store.options import JetStreamOptions

__all__ = ["HistoryStats", "InMemoryEventStore", "JetStreamEventStore", "JetStreamOptions"]
