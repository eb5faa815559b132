"""Where a projection reads from: the event stream(s) of one namespace, and what it delivers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from aether.event import Event
from aether.names import stream_name, validate_subject_prefix
from aether.store.partitioning import partition_stream_name, validate_partitions

if TYPE_CHECKING:
    from aether.store.jetstream import JetStreamEventStore

__all__ = ["EventSource", "StoredEvent"]


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """An event together with its position: the stream sequence it is stored at.

    Positions increase along the stream; one actor's events have increasing positions in
    version order. Read models store the position they applied last (per actor, or
    overall) to apply redelivered events idempotently. In a partitioned namespace the
    position is the sequence in the partition's stream (``partition``): positions of one
    actor still increase, positions of actors in different partitions are unrelated.
    """

    event: Event
    position: int
    partition: int = 0


class EventSource:
    """The event stream(s) of one namespace, as written by :class:`~aether.store.JetStreamEventStore`.

    Args:
        stream: the store's base stream name.
        namespace: the store's namespace (``None`` for none).
        subject_prefix: the store's subject prefix (``JetStreamOptions.subject_prefix``).
        partitions: the namespace's partition count (``store.partitions``; 1 = one stream).

    With partitions, :attr:`stream` is the namespace's stream name (it names checkpoints and
    dead letters), :attr:`streams` the partition streams and :attr:`parts` one single-stream
    source per partition.

    Raises:
        InvalidNameError: a name breaks the rules of :mod:`aether.names`.
        InvalidInputError: bad ``partitions``.
    """

    __slots__ = ("event_filter", "event_prefix", "namespace", "partitions", "stream", "subject_prefix")

    def __init__(self, stream: str, namespace: str | None = None, *, subject_prefix: str = "aether",
                 partitions: int = 1) -> None:
        validate_subject_prefix(subject_prefix)
        self._init(stream_name(stream, namespace), namespace, subject_prefix, validate_partitions(partitions))

    def _init(self, stream: str, namespace: str | None, subject_prefix: str, partitions: int = 1) -> None:
        self.stream = stream
        self.namespace = namespace
        self.subject_prefix = subject_prefix
        self.partitions = partitions
        self.event_prefix = f"{subject_prefix}.{stream}.e."
        self.event_filter = self.event_prefix + "*"

    @classmethod
    def of(cls, store: JetStreamEventStore) -> EventSource:
        """The source holding everything ``store`` writes (same streams, same subjects)."""
        source = cls.__new__(cls)
        source._init(store.stream, store.namespace, store.options.subject_prefix, store.partitions)
        return source

    @property
    def streams(self) -> tuple[str, ...]:
        """The JetStream streams to read, partition 0 first."""
        if self.partitions == 1:
            return (self.stream,)
        return tuple(partition_stream_name(self.stream, i) for i in range(self.partitions))

    @property
    def parts(self) -> tuple[EventSource, ...]:
        """One single-stream source per partition (``(self,)`` without partitions)."""
        if self.partitions == 1:
            return (self,)
        parts = []
        for name in self.streams:
            part = EventSource.__new__(EventSource)
            part._init(name, self.namespace, self.subject_prefix)
            parts.append(part)
        return tuple(parts)

    def __repr__(self) -> str:
        extra = f", partitions={self.partitions}" if self.partitions > 1 else ""
        return f"EventSource(stream={self.stream!r}, subject_prefix={self.subject_prefix!r}{extra})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, EventSource) and other.stream == self.stream
                and other.subject_prefix == self.subject_prefix and other.partitions == self.partitions)

    def __hash__(self) -> int:
        return hash((self.stream, self.subject_prefix, self.partitions))
