"""The Aether error tree.

Every error Aether raises derives from :class:`AetherError`; errors of nats-py are
translated at the boundary, by one table (``aether._nats.errors``: a component sees its own
"unavailable" class, e.g. :class:`StoreUnavailableError` from a store and
:class:`NatsConnectionError` from the bus), the original kept as ``__cause__``::

    AetherError
    ├── VersionConflictError        append with a version that is not latest+1
    │   ├── DuplicateEventIdError    the event's id is already used by another stored event
    │   └── ConflictRetriesExhaustedError  (aether.aggregate) a command kept conflicting
    ├── AggregateError              (aether.aggregate) the aggregate cannot be rebuilt
    │   ├── UnknownEventError       (aether.aggregate) no handler for a stored event type
    │   └── EventSchemaError        (aether.aggregate) a stored event does not fit its schema
    ├── ProjectionError             (aether.projection) a projection could not run
    │   └── ProjectionNotActiveError  (aether.projection, +ClusterError) not running on this node
    ├── InvalidInputError (+ValueError)
    │   ├── InvalidNameError        an actor id, namespace or stream name breaks a rule
    │   ├── InvalidVersionError     version < 1, or non-consecutive versions in a batch
    │   ├── InvalidBatchError       empty batch, mixed actors, too many events
    │   └── EventTooLargeError      encoded event exceeds the size limit
    ├── CorruptEventError           a stored message is not a valid Aether event
    ├── StoreError                  the event store failed (server error, missing stream, …)
    │   └── JetStreamApiError       the JetStream API replied with an error (``err_code`` kept)
    ├── NatsConnectionError         the NATS server cannot be reached / connection closed
    │   └── StoreUnavailableError
    ├── AetherTimeoutError (+TimeoutError)  an operation did not finish in time
    ├── PermissionDeniedError       the server refused the operation for lack of permissions
    ├── BusClosedError              publish or subscribe on a closed bus
    ├── MetricsUnavailableError (+ImportError)  metrics asked for, prometheus-client not installed
    ├── ClusterError                cluster-level failures (not leader, not owner, routing)
    │   ├── NotOwnerError           this node does not own the actor's shard
    │   ├── FencedError             acting with a lease/term that is no longer valid
    │   └── RequestFailedError      the owning node's handler raised (or has no handler)
    └── NatsServerError             the embedded nats-server could not start or stopped
"""

from __future__ import annotations

__all__ = [
    "AetherError",
    "AetherTimeoutError",
    "BusClosedError",
    "ClusterError",
    "CorruptEventError",
    "DuplicateEventIdError",
    "EventTooLargeError",
    "FencedError",
    "InvalidBatchError",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidVersionError",
    "JetStreamApiError",
    "MetricsUnavailableError",
    "NatsConnectionError",
    "NatsServerError",
    "NotOwnerError",
    "PermissionDeniedError",
    "RequestFailedError",
    "StoreError",
    "StoreUnavailableError",
    "VersionConflictError",
]


class AetherError(Exception):
    """Root of every error Aether raises."""


class VersionConflictError(AetherError):
    """An append carried a version that is not the actor's latest version + 1.

    Attributes:
        actor_id: the actor written to.
        attempted_version: the version the caller tried to write.
        current_version: the actor's latest stored version at the time of the check.
    """

    def __init__(self, actor_id: str, attempted_version: int, current_version: int) -> None:
        self.actor_id = actor_id
        self.attempted_version = attempted_version
        self.current_version = current_version
        super().__init__(
            f"version conflict on actor {actor_id!r}: attempted version {attempted_version}, "
            f"current version is {current_version} (expected {current_version + 1})"
        )

    def __reduce__(self) -> tuple[type[VersionConflictError], tuple[str, int, int]]:
        return (type(self), (self.actor_id, self.attempted_version, self.current_version))


class DuplicateEventIdError(VersionConflictError):
    """An append carried the id of an event that is already stored at another version or actor.

    Event ids make retries idempotent: the server de-duplicates them (within the stream's
    duplicate window), so an event that reuses a stored event's id is not stored. Build every new
    event with a new id (the default). Still a :class:`VersionConflictError` (the append did not
    happen), with the actor's real ``current_version``.

    Attributes:
        event_id: the reused id ("" when the store cannot tell which id of a batch it was).
        stored_actor_id, stored_version: where the id is stored ("" / 0 when unknown).
    """

    def __init__(self, actor_id: str, attempted_version: int, current_version: int, event_id: str = "",
                 stored_actor_id: str = "", stored_version: int = 0) -> None:
        self.event_id = event_id
        self.stored_actor_id = stored_actor_id
        self.stored_version = stored_version
        super().__init__(actor_id, attempted_version, current_version)
        if event_id:
            where = (f"version {stored_version} of actor {stored_actor_id!r}" if stored_version
                     else "an event stored earlier")
            what = f"event id {event_id!r} is already used by {where}"
        else:
            what = "an event id of the batch is already used by an event stored earlier"
        self.args = (f"{what}: version {attempted_version} of actor {actor_id!r} was not stored "
                     f"(its current version is {current_version}); give every new event a new id",)

    def __reduce__(self) -> tuple[type[VersionConflictError], tuple[str, int, int, str, str, int]]:  # type: ignore[override]
        return (type(self), (self.actor_id, self.attempted_version, self.current_version, self.event_id,
                             self.stored_actor_id, self.stored_version))


class InvalidInputError(AetherError, ValueError):
    """The caller passed something Aether cannot accept."""


class InvalidNameError(InvalidInputError):
    """An actor id, namespace, stream or cluster name breaks a naming rule (named in the message)."""


class InvalidVersionError(InvalidInputError):
    """A version is < 1, or a batch's versions are not consecutive."""


class InvalidBatchError(InvalidInputError):
    """A batch is empty, mixes actors, or exceeds the batch size limit."""


class EventTooLargeError(InvalidInputError):
    """An encoded event is larger than the configured or server maximum."""

    def __init__(self, actor_id: str, size: int, limit: int) -> None:
        self.actor_id = actor_id
        self.size = size
        self.limit = limit
        super().__init__(f"event for actor {actor_id!r} encodes to {size} bytes, over the limit of {limit}")


class CorruptEventError(AetherError):
    """A stored message is not a valid Aether event.

    Attributes:
        actor_id: the actor whose history holds the message (if known).
        stream: the stream holding the message.
        sequence: the stream sequence of the message.
    """

    def __init__(self, reason: str, *, actor_id: str | None = None, stream: str | None = None,
                 sequence: int | None = None) -> None:
        self.reason = reason
        self.actor_id = actor_id
        self.stream = stream
        self.sequence = sequence
        where = []
        if actor_id is not None:
            where.append(f"actor {actor_id!r}")
        if stream is not None:
            where.append(f"stream {stream!r}")
        if sequence is not None:
            where.append(f"sequence {sequence}")
        super().__init__(f"corrupt event ({', '.join(where) or 'unknown location'}): {reason}")


class StoreError(AetherError):
    """The event store failed for a reason other than a conflict or bad input."""


class JetStreamApiError(StoreError):
    """The JetStream API replied with an error (also raised as is by the stores and the cluster's
    KV; ``err_code`` tells the cause, e.g. 10071 / 10164 wrong last sequence, 10059 stream not found).

    Attributes:
        code: the HTTP-like status code. err_code: the JetStream error code. description: text.
    """

    def __init__(self, call: str, code: int, err_code: int, description: str) -> None:
        self.call = call
        self.code = code
        self.err_code = err_code
        self.description = description
        super().__init__(f"JetStream {call} failed: {description} (code {code}, err_code {err_code})")


class NatsConnectionError(AetherError):
    """The NATS server cannot be reached, or the connection is closed or draining."""


class StoreUnavailableError(NatsConnectionError, StoreError):
    """The store's server is unreachable; the operation was not (known to be) performed."""


class AetherTimeoutError(AetherError, TimeoutError):
    """An operation did not complete within its timeout. Its outcome may be unknown."""


class PermissionDeniedError(AetherError):
    """The NATS server refused an operation because the user lacks the permission."""


class BusClosedError(AetherError):
    """The event bus has been closed."""


class MetricsUnavailableError(AetherError, ImportError):
    """Metrics were asked for but the optional ``prometheus-client`` package is not installed.

    Install it with ``pip install 'aether-nats[metrics]'``; everything else works without it.
    """


class ClusterError(AetherError):
    """A cluster operation failed."""


class NotOwnerError(ClusterError):
    """This node does not own the shard of the actor."""


class FencedError(ClusterError):
    """An action was attempted with a lease or term that is no longer valid."""


class RequestFailedError(ClusterError):
    """A cluster request reached the owning node, whose handler raised (or which has no handler).

    Not retried: the request may have had effects. Attributes: ``actor_id``, ``node_id`` (the
    node that answered), ``error_type`` (the remote exception's class name, ``""`` if none).
    """

    def __init__(self, message: str, *, actor_id: str = "", node_id: str = "", error_type: str = "") -> None:
        self.actor_id = actor_id
        self.node_id = node_id
        self.error_type = error_type
        super().__init__(message)


class NatsServerError(AetherError):
    """The embedded nats-server could not be found, started, or stopped."""
