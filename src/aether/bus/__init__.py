"""The event bus: live notification of events by namespace, in one process or across nodes.

* :class:`EventBus` — in-process.
* :class:`NATSEventBus` — across processes and machines, on core NATS.
* :class:`EventBroadcaster` — the protocol both implement.
* :class:`Subscription` — what ``subscribe()`` returns: an async iterator of events with a
  bounded buffer (overflow drops and is counted, never blocks a publisher).

See ``docs/bus.md`` for the subject layout and the delivery guarantees.
"""

from .local import EventBus
from .nats import NATSEventBus
from .protocol import EventBroadcaster
from .stats import BusMetricsHook, BusStats, BusStatsSource, NamespaceStats
from .subscription import Subscription
from .wire import DEFAULT_SUBJECT_PREFIX

__all__ = [
    "DEFAULT_SUBJECT_PREFIX",
    "BusMetricsHook",
    "BusStats",
    "BusStatsSource",
    "EventBroadcaster",
    "EventBus",
    "NATSEventBus",
    "NamespaceStats",
    "Subscription",
]
