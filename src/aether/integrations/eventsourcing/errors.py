"""The errors the eventsourcing persistence module raises.

Each is both the ``eventsourcing.persistence`` error an ``eventsourcing`` application expects and
an :class:`~aether.errors.AetherError`, so either family of ``except`` clauses catches it::

    PersistenceError / AetherError
    ├── JetStreamIntegrityError (IntegrityError)      an (originator_id, originator_version) exists,
    │                                                 or a tracking id at or below the recorded one
    ├── JetStreamDataError (DataError, ValueError)    input the stream cannot hold: a save of more
    │                                                 events than one atomic batch, a message too
    │                                                 large, versions of one originator out of order
    ├── JetStreamOperationalError (OperationalError)  the server is unreachable, refused the
    │                                                 credentials, did not answer in time, or failed;
    │                                                 the factory is closed
    └── JetStreamProgrammingError (ProgrammingError)  the stream is missing (``CREATE_TABLE`` false)
                                                      or incompatible; permission refused
"""

from __future__ import annotations

from eventsourcing.persistence import DataError, IntegrityError, OperationalError, ProgrammingError

from aether.errors import AetherError

__all__ = [
    "JetStreamDataError",
    "JetStreamIntegrityError",
    "JetStreamOperationalError",
    "JetStreamProgrammingError",
]


class JetStreamIntegrityError(IntegrityError, AetherError):
    """A stored event with the same (originator_id, originator_version) exists (or, since the
    versions of one originator are stored in ascending order, a version at or below its latest),
    or a tracking record's notification id is at or below the one already recorded."""


class JetStreamDataError(DataError, AetherError, ValueError):
    """The events of one save cannot be stored as given (nothing was stored)."""


class JetStreamOperationalError(OperationalError, AetherError):
    """The NATS server is unreachable, did not answer in time, or failed; or the factory is closed.

    When raised by ``insert_events`` after a timeout, the message says whether the events may
    nevertheless have been stored."""


class JetStreamProgrammingError(ProgrammingError, AetherError):
    """The stream is missing (and may not be created), is configured incompatibly, or the
    server refused an operation for lack of permissions."""
