"""Where a projection reads from: the event stream of one namespace, and what it delivers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from aether.event import Event
from aether.names import stream_name, validate_subject_prefix

if TYPE_CHECKING:
    from aether.store.jetstream import JetStreamEventStore

__all__ = ["EventSource", "StoredEvent"]


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """An event together with its position: the stream sequence it is stored at.

    Positions increase along the stream; one actor's events have increasing positions in
    version order. Read models store the position they applied last (per actor, or
    overall) to apply redelivered events idempotently.
    """

    event: Event
    position: int


class EventSource:
    """The event stream of one namespace, as written by :class:`~aether.store.JetStreamEventStore`.

    Args:
        stream: the store's base stream name.
        namespace: the store's namespace (``None`` for none).
        subject_prefix: the store's subject prefix (``JetStreamOptions.subject_prefix``).

    Raises:
        InvalidNameError: a name breaks the rules of :mod:`aether.names`.
    """

    __slots__ = ("event_filter", "event_prefix", "namespace", "stream", "subject_prefix")

    def __init__(self, stream: str, namespace: str | None = None, *, subject_prefix: str = "aether") -> None:
        validate_subject_prefix(subject_prefix)
        self._init(stream_name(stream, namespace), namespace, subject_prefix)

    def _init(self, stream: str, namespace: str | None, subject_prefix: str) -> None:
        self.stream = stream
        self.namespace = namespace
        self.subject_prefix = subject_prefix
        self.event_prefix = f"{subject_prefix}.{stream}.e."
        self.event_filter = self.event_prefix + "*"

    @classmethod
    def of(cls, store: JetStreamEventStore) -> EventSource:
        """The source holding everything ``store`` writes (same stream, same subjects)."""
        source = cls.__new__(cls)
        source._init(store.stream, store.namespace, store.options.subject_prefix)
        return source

    def __repr__(self) -> str:
        return f"EventSource(stream={self.stream!r}, subject_prefix={self.subject_prefix!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, EventSource) and other.stream == self.stream
                and other.subject_prefix == self.subject_prefix)

    def __hash__(self) -> int:
        return hash((self.stream, self.subject_prefix))
