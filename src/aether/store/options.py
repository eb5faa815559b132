"""Frozen, keyword-only configuration of the JetStream event store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "JetStreamOptions"]

DEFAULT_MAX_EVENT_SIZE = 1024 * 1024 - 512
"""The largest encoded event a store accepts by default: what a default nats-server (1 MiB
``max_payload``) leaves after the headers Aether adds. Both stores use it, so they accept and
refuse the same events; a JetStream store also stays below its server's ``max_payload``."""


class _DefaultPartitions(int):
    """The default partition count (1), told apart from an explicit ``partitions=1``: a store
    opened with the default adopts the count recorded on the server."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "1"


_DEFAULT_PARTITIONS = _DefaultPartitions(1)


@dataclass(frozen=True, kw_only=True, slots=True)
class JetStreamOptions:
    """Options of :class:`~aether.store.JetStreamEventStore`.

    Attributes:
        replicas: stream replicas (1, or 3 on a NATS cluster for fault tolerance).
        storage: ``"file"`` (durable) or ``"memory"``.
        max_age: seconds events are kept (0 = forever).
        max_bytes: size limit of the stream in bytes (-1 = unlimited).
        max_msgs: message limit of the stream (-1 = unlimited).
        duplicate_window: seconds the server remembers event ids for de-duplication.
        cache_size: number of actors whose latest version and sequence are cached.
        max_event_size: largest encoded event accepted (capped by the server's max payload;
            default 1 MiB - 512 B, the same as InMemoryEventStore).
        page_size: events fetched per request when reading a history.
        max_reply_bytes: the most bytes one batched reply of :meth:`get_heads` may bring (the
            server stops there; the actors it did not answer are read one by one).
        timeout: seconds to wait for any single server reply.
        publish_retries: how often a publish that got no ack is re-sent (idempotently).
        subject_prefix: first subject token(s) of every Aether subject.
        create_stream: create the stream when missing (else a missing stream is an error).
        partitions: streams the namespace is spread over (1..256; 1 = one stream, the layout
            of Aether before partitions). The count is recorded on the server: a store opened
            without ``partitions`` adopts the recorded count, an explicit different count is
            an ``InvalidInputError``. See :mod:`aether.store.partitioning` and docs/scaling.md.
    """

    replicas: int = 1
    storage: Literal["file", "memory"] = "file"
    max_age: float = 0.0
    max_bytes: int = -1
    max_msgs: int = -1
    duplicate_window: float = 120.0
    cache_size: int = 100_000
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE
    page_size: int = 1000
    max_reply_bytes: int = 8 * 1024 * 1024
    timeout: float = 5.0
    publish_retries: int = 2
    subject_prefix: str = "aether"
    create_stream: bool = True
    partitions: int = _DEFAULT_PARTITIONS

    def __post_init__(self) -> None:
        from aether.errors import InvalidInputError
        from aether.names import validate_subject_prefix

        for name in ("replicas", "max_bytes", "max_msgs", "cache_size", "max_event_size", "page_size",
                     "publish_retries", "max_reply_bytes"):
            value = getattr(self, name)
            if type(value) is not int:
                raise InvalidInputError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        for name in ("max_age", "duplicate_window", "timeout"):
            value = getattr(self, name)
            if type(value) not in (int, float) or value != value:
                raise InvalidInputError(f"{name} must be a number of seconds, got {type(value).__name__} {value!r}")
        if type(self.create_stream) is not bool:
            raise InvalidInputError(f"create_stream must be a bool, got {self.create_stream!r}")
        if self.max_age < 0 or self.duplicate_window < 0:
            raise InvalidInputError("max_age and duplicate_window must be >= 0")
        if self.replicas not in (1, 2, 3, 4, 5):
            raise InvalidInputError(f"replicas must be 1..5, got {self.replicas}")
        if self.storage not in ("file", "memory"):
            raise InvalidInputError(f"storage must be 'file' or 'memory', got {self.storage!r}")
        if self.cache_size < 1:
            raise InvalidInputError("cache_size must be >= 1")
        if not 1 <= self.page_size <= 1000:
            raise InvalidInputError("page_size must be 1..1000")
        if self.timeout <= 0:
            raise InvalidInputError("timeout must be > 0")
        if self.max_reply_bytes < 1:
            raise InvalidInputError("max_reply_bytes must be >= 1")
        if self.publish_retries < 0:
            raise InvalidInputError("publish_retries must be >= 0")
        if self.max_event_size < 64:
            raise InvalidInputError("max_event_size must be >= 64 bytes")
        validate_subject_prefix(self.subject_prefix)
        from aether.store.partitioning import validate_partitions

        validate_partitions(self.partitions)

    @property
    def partitions_explicit(self) -> bool:
        """Whether ``partitions`` was given (else the count recorded on the server is adopted)."""
        return self.partitions is not _DEFAULT_PARTITIONS
