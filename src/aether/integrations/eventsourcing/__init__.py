"""NATS JetStream as a persistence module of the `eventsourcing <https://pypi.org/project/eventsourcing/>`_ library.

Select it in an application's environment::

    os.environ["PERSISTENCE_MODULE"] = "aether.integrations.eventsourcing"
    os.environ["AETHER_NATS_URL"] = "nats://127.0.0.1:4222"
    app = BankAccounts()          # its events go to the JetStream stream "es-BankAccounts"

See :class:`JetStreamFactory` for every setting, and ``docs/integrations.md`` for the design:
each application has its own stream; one save is one JetStream atomic batch whose per-originator
``Nats-Expected-Last-Subject-Sequence`` checks make the server refuse an existing
``(originator_id, originator_version)``; notification ids are stream sequences; tracking records
travel in the same batch as the events they account for.
"""

from aether.integrations.eventsourcing.errors import (
    JetStreamDataError,
    JetStreamIntegrityError,
    JetStreamOperationalError,
    JetStreamProgrammingError,
)
from aether.integrations.eventsourcing.factory import JetStreamFactory
from aether.integrations.eventsourcing.recorders import (
    JetStreamAggregateRecorder,
    JetStreamApplicationRecorder,
    JetStreamProcessRecorder,
    JetStreamSubscription,
    JetStreamTrackingRecorder,
)

Factory = JetStreamFactory

__all__ = [
    "Factory",
    "JetStreamAggregateRecorder",
    "JetStreamApplicationRecorder",
    "JetStreamDataError",
    "JetStreamFactory",
    "JetStreamIntegrityError",
    "JetStreamOperationalError",
    "JetStreamProcessRecorder",
    "JetStreamProgrammingError",
    "JetStreamSubscription",
    "JetStreamTrackingRecorder",
]
