"""The infrastructure factory ``eventsourcing`` finds in ``aether.integrations.eventsourcing``."""

from __future__ import annotations

from typing import TypeVar

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic

from aether.integrations.eventsourcing import _settings as keys
from aether.integrations.eventsourcing._connection import Connection
from aether.integrations.eventsourcing._settings import Settings, create_stream, purpose_stream
from aether.integrations.eventsourcing.errors import JetStreamProgrammingError
from aether.integrations.eventsourcing.recorders import (
    JetStreamAggregateRecorder,
    JetStreamApplicationRecorder,
    JetStreamProcessRecorder,
    JetStreamTrackingRecorder,
    _JetStreamRecorder,
)

__all__ = ["JetStreamFactory"]

_R = TypeVar("_R", bound=_JetStreamRecorder)


class JetStreamFactory(InfrastructureFactory[JetStreamTrackingRecorder]):
    """Recorders on NATS JetStream, one stream per application.

    Settings (from the application's environment, then the process's; each may be prefixed with
    the upper-cased application name):

    * ``AETHER_NATS_URL`` (comma-separated for several servers; default ``nats://127.0.0.1:4222``),
      ``AETHER_NATS_USER``/``AETHER_NATS_PASSWORD``, ``AETHER_NATS_TOKEN``, ``AETHER_NATS_CREDS``,
      ``AETHER_NATS_NKEY_SEED``, ``AETHER_NATS_TLS_CA``/``_CERT``/``_KEY``/``_HOSTNAME``,
      ``AETHER_NATS_CONNECT_TIMEOUT`` — as the ``aether`` command line;
    * ``AETHER_ES_STREAM`` — the stream (default ``es-<encoded application name>``); snapshots and
      other aggregate-recorder purposes live in ``<stream>__<purpose>``;
    * ``AETHER_ES_REPLICAS`` (1), ``AETHER_ES_STORAGE`` (``file``/``memory``), used when creating;
    * ``CREATE_TABLE`` (true): create a missing stream; false: require it;
    * ``AETHER_ES_TIMEOUT`` (5 s): the wait for any one server reply; ``AETHER_ES_POLL_INTERVAL`` (1 s):
      how often live subscriptions look for events saved by writers that did not ping.

    The factory connects when it makes its first recorder, runs the NATS client on one event loop
    in a background thread, and :meth:`close` closes both.

    Raises:
        InvalidInputError / InvalidNameError: a malformed setting (when constructed).
        JetStreamOperationalError: the server cannot be reached (when a recorder is made).
        JetStreamProgrammingError: the stream is missing and ``CREATE_TABLE`` is false, or it is not a
            stream of this module.
    """

    AETHER_NATS_URL = keys.URL
    AETHER_ES_STREAM = keys.STREAM
    AETHER_ES_TIMEOUT = keys.TIMEOUT
    CREATE_TABLE = keys.CREATE_TABLE

    aggregate_recorder_class = JetStreamAggregateRecorder
    application_recorder_class = JetStreamApplicationRecorder
    tracking_recorder_class = JetStreamTrackingRecorder
    process_recorder_class = JetStreamProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        self.settings = Settings.from_env(self.env)
        self._connection = Connection(self.settings, self.env.name)

    @property
    def stream_name(self) -> str:
        """The application's stream."""
        return self.settings.stream

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        """An aggregate recorder on the application's stream (``purpose="events"``) or on
        ``<stream>__<purpose>`` (e.g. snapshots)."""
        stream = purpose_stream(self.settings.stream, purpose)
        store = self._connection.store(stream, create=create_stream(self.env))
        return self.aggregate_recorder_class(self._connection, store)

    def application_recorder(self) -> ApplicationRecorder:
        """The application recorder (``APPLICATION_RECORDER_TOPIC`` may name a subclass)."""
        cls = self._recorder_class(self.APPLICATION_RECORDER_TOPIC, self.application_recorder_class)
        store = self._connection.store(self.settings.stream, create=create_stream(self.env))
        return cls(self._connection, store)

    def tracking_recorder(
        self, tracking_recorder_class: type[JetStreamTrackingRecorder] | None = None
    ) -> JetStreamTrackingRecorder:
        """A tracking recorder on the application's stream (``TRACKING_RECORDER_TOPIC`` or the
        argument may name a subclass)."""
        cls = tracking_recorder_class or self._recorder_class(self.TRACKING_RECORDER_TOPIC,
                                                              self.tracking_recorder_class)
        if not issubclass(cls, JetStreamTrackingRecorder):
            raise JetStreamProgrammingError(f"{cls!r} is not a subclass of JetStreamTrackingRecorder")
        store = self._connection.store(self.settings.stream, create=create_stream(self.env))
        return cls(self._connection, store)

    def process_recorder(self) -> ProcessRecorder:
        """The process recorder (``PROCESS_RECORDER_TOPIC`` may name a subclass)."""
        cls = self._recorder_class(self.PROCESS_RECORDER_TOPIC, self.process_recorder_class)
        store = self._connection.store(self.settings.stream, create=create_stream(self.env))
        return cls(self._connection, store)

    def _recorder_class(self, topic_key: str, default: type[_R]) -> type[_R]:
        topic = self.env.get(topic_key)
        if not topic:
            return default
        cls = resolve_topic(topic)
        if not (isinstance(cls, type) and issubclass(cls, default)):
            raise JetStreamProgrammingError(f"{topic_key}={topic!r} is not a subclass of {default.__name__}")
        return cls

    def close(self) -> None:
        """Close the NATS connection and stop the loop thread (recorders then raise
        :class:`JetStreamOperationalError`)."""
        self._connection.close()
        super().close()

