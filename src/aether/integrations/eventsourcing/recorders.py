"""The synchronous recorders ``eventsourcing`` calls; each call runs on the factory's loop thread
and waits a bounded time (see :class:`~aether.integrations.eventsourcing.JetStreamFactory`)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    ListenNotifySubscription,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)

from aether.integrations.eventsourcing._connection import Connection
from aether.integrations.eventsourcing._stream import StreamStore

__all__ = [
    "JetStreamAggregateRecorder",
    "JetStreamApplicationRecorder",
    "JetStreamProcessRecorder",
    "JetStreamSubscription",
    "JetStreamTrackingRecorder",
]


class _JetStreamRecorder:
    """What every recorder holds: the factory's connection and its stream."""

    def __init__(self, connection: Connection, store: StreamStore) -> None:
        self._connection = connection
        self._store = store

    @property
    def stream_name(self) -> str:
        """The JetStream stream this recorder reads and writes."""
        return self._store.stream

    def _insert(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None) -> list[int]:
        return self._connection.run(self._store.insert(stored_events, tracking),
                                    f"saving to stream {self._store.stream!r}")


class JetStreamAggregateRecorder(_JetStreamRecorder, AggregateRecorder):
    """Stored events per originator, one subject each (snapshots use one of these, in their own stream).

    Errors (all subclasses of ``eventsourcing.persistence.PersistenceError`` and of
    :class:`~aether.errors.AetherError`): :class:`JetStreamIntegrityError`, :class:`JetStreamDataError`,
    :class:`JetStreamOperationalError`, :class:`JetStreamProgrammingError`.
    """

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Store the events of one save atomically (one JetStream atomic batch).

        Raises:
            JetStreamIntegrityError: an (originator_id, originator_version) exists, or is at or below
                the originator's latest version; nothing is stored.
            JetStreamDataError: more than 1000 messages, a message too large; nothing is stored.
            JetStreamOperationalError: the server is unreachable or did not answer in time.
        """
        self._insert(stored_events, None)
        return None

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
                      desc: bool = False, limit: int | None = None) -> Sequence[StoredEvent]:
        """The originator's events with ``gt < version <= lte``, ascending (``desc``: descending),
        at most ``limit``.

        Raises:
            JetStreamOperationalError: the server is unreachable or did not answer in time.
        """
        return self._connection.run(
            self._store.select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit),
            f"reading the events of {originator_id} from stream {self._store.stream!r}", self._store)


class JetStreamApplicationRecorder(JetStreamAggregateRecorder, ApplicationRecorder):
    """Adds the application sequence: notification id = the event's stream sequence."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """As :meth:`JetStreamAggregateRecorder.insert_events`; returns the notification ids
        (consecutive: one save is one atomic batch, and batches never interleave)."""
        return self._insert(stored_events, None)

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *, inclusive_of_start: bool = True) -> Sequence[Notification]:
        """Notifications with ids from ``start`` (exclusive unless ``inclusive_of_start``) up to
        ``stop``, whose topic is in ``topics`` (all when empty), at most ``limit``.

        Raises:
            JetStreamOperationalError: the server is unreachable or did not answer in time.
        """
        return self._connection.run(
            self._store.select_notifications(start, limit, stop, topics, inclusive_of_start),
            f"reading notifications from stream {self._store.stream!r}", self._store)

    def max_notification_id(self) -> int | None:
        """The last event's notification id, or None when there is none.

        Raises:
            JetStreamOperationalError: the server is unreachable or did not answer in time.
        """
        return self._connection.run(self._store.max_notification_id(),
                                    f"reading the last notification id of stream {self._store.stream!r}")

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        """A live iterator of notifications with ids above ``gt``; it blocks for new ones.

        Saves through this module wake it at once; others are seen within ``AETHER_ES_POLL_INTERVAL``.
        Iterating raises :class:`JetStreamOperationalError` (and the subscription ends) when the
        server cannot be read.
        """
        return JetStreamSubscription(self, gt=gt, topics=topics)

    def _listen(self, event: threading.Event) -> None:
        self._connection.listen(self._store, event)

    def _unlisten(self, event: threading.Event) -> None:
        self._connection.unlisten(self._store, event)


class JetStreamSubscription(ListenNotifySubscription[JetStreamApplicationRecorder]):
    """``eventsourcing``'s pull-on-notify subscription, woken by the stream's save pings and a timer."""

    def __init__(self, recorder: JetStreamApplicationRecorder, gt: int | None = None,
                 topics: Sequence[str] = ()) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        try:
            recorder._listen(self._has_been_notified)
        except BaseException:
            self.stop()
            self._pull_thread.join()
            raise
        self._has_been_notified.set()  # pull again: a save may have landed before the listener existed

    def stop(self) -> None:
        super().stop()
        self._recorder._unlisten(self._has_been_notified)


class JetStreamTrackingRecorder(_JetStreamRecorder, TrackingRecorder):
    """Tracking records, one subject per upstream application; each new one must be above the last."""

    def insert_tracking(self, tracking: Tracking) -> None:
        """Record ``tracking``.

        Raises:
            JetStreamIntegrityError: its notification id is at or below the one recorded.
            JetStreamOperationalError: the server is unreachable or did not answer in time.
        """
        self._insert((), tracking)

    def max_tracking_id(self, application_name: str) -> int | None:
        """The highest notification id recorded for ``application_name`` (None: none).

        Raises:
            JetStreamOperationalError: the server is unreachable or did not answer in time.
        """
        return self._connection.run(self._store.max_tracking_id(application_name),
                                    f"reading the tracking of {application_name!r} from stream {self._store.stream!r}")


class JetStreamProcessRecorder(JetStreamTrackingRecorder, JetStreamApplicationRecorder, ProcessRecorder):
    """Events and the tracking record of the notification that caused them, in one atomic batch."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """As :meth:`JetStreamApplicationRecorder.insert_events`, with the ``tracking=`` record (if
        any) in the same batch.

        Raises:
            JetStreamIntegrityError: a stored event exists, or the tracking id is at or below the
                recorded one; nothing is stored.
        """
        tracking = kwargs.get("tracking")
        return self._insert(stored_events, tracking if isinstance(tracking, Tracking) else None)
