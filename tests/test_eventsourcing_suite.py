"""The test cases that ``eventsourcing`` ships, run against ``aether.integrations.eventsourcing``
on a real nats-server: every recorder case, the infrastructure-factory case and the example
application case. Nothing is overridden except the hooks the cases ask for (``create_recorder``,
the expected classes); ``test_insert_subscribe`` runs the case's ``optional_test_insert_subscribe``
as eventsourcing's own SQLite and PostgreSQL suites do. (The cases are reached through their
modules so that pytest does not collect the abstract bases themselves.)
"""

from __future__ import annotations

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.tests import application as es_application
from eventsourcing.tests import persistence as es_persistence
from eventsourcing.utils import Environment, get_topic

from _es_helpers import MODULE, ModuleSelected, ModuleServer, drop_streams, streams_of
from aether.integrations.eventsourcing import (
    JetStreamAggregateRecorder,
    JetStreamApplicationRecorder,
    JetStreamFactory,
    JetStreamProcessRecorder,
    JetStreamTrackingRecorder,
)

_server = ModuleServer()


def setUpModule() -> None:
    _server.start()


def tearDownModule() -> None:
    _server.stop()


class _OnNats:
    """Gives each test a fresh stream (named after the test class) and a factory closed afterwards."""

    app_name = "EsSuite"

    def setUp(self) -> None:
        drop_streams(_server.url, *streams_of(self.app_name))
        self.factory = JetStreamFactory(Environment(self.app_name, {"AETHER_NATS_URL": _server.url}))
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        super().tearDown()  # type: ignore[misc]
        self.factory.close()


class TestAggregateRecorder(_OnNats, es_persistence.AggregateRecorderTestCase):
    app_name = "AggregateRecorderCase"

    def create_recorder(self) -> JetStreamAggregateRecorder:
        recorder = self.factory.aggregate_recorder()
        assert isinstance(recorder, JetStreamAggregateRecorder)
        return recorder


class TestSnapshotRecorder(_OnNats, es_persistence.AggregateRecorderTestCase):
    """The same case on an aggregate recorder for another purpose (snapshots: its own stream)."""

    app_name = "SnapshotRecorderCase"

    def create_recorder(self) -> JetStreamAggregateRecorder:
        recorder = self.factory.aggregate_recorder("snapshots")
        assert isinstance(recorder, JetStreamAggregateRecorder)
        return recorder


class TestApplicationRecorder(_OnNats, es_persistence.ApplicationRecorderTestCase[JetStreamApplicationRecorder]):
    app_name = "ApplicationRecorderCase"

    def create_recorder(self) -> JetStreamApplicationRecorder:
        recorder = self.factory.application_recorder()
        assert isinstance(recorder, JetStreamApplicationRecorder)
        return recorder

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestNonInterleavingNotificationIds(_OnNats, es_persistence.NonInterleavingNotificationIDsBaseCase):
    app_name = "NonInterleavingCase"

    def create_recorder(self) -> JetStreamApplicationRecorder:
        recorder = self.factory.application_recorder()
        assert isinstance(recorder, JetStreamApplicationRecorder)
        return recorder


class TestTrackingRecorder(_OnNats, es_persistence.TrackingRecorderTestCase):
    app_name = "TrackingRecorderCase"

    def create_recorder(self) -> JetStreamTrackingRecorder:
        return self.factory.tracking_recorder()


class TestProcessRecorder(_OnNats, es_persistence.ProcessRecorderTestCase):
    app_name = "ProcessRecorderCase"

    def create_recorder(self) -> JetStreamProcessRecorder:
        recorder = self.factory.process_recorder()
        assert isinstance(recorder, JetStreamProcessRecorder)
        return recorder


class _TrackingRecorderSubclass(JetStreamTrackingRecorder):
    pass


class TestInfrastructureFactory(es_persistence.InfrastructureFactoryTestCase[JetStreamFactory]):
    def setUp(self) -> None:
        self.env = Environment("FactoryCase")
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = MODULE
        self.env["AETHER_NATS_URL"] = _server.url
        drop_streams(_server.url, *streams_of("FactoryCase"))
        super().setUp()

    def expected_factory_class(self) -> type[JetStreamFactory]:
        return JetStreamFactory

    def expected_aggregate_recorder_class(self) -> type[JetStreamAggregateRecorder]:
        return JetStreamAggregateRecorder

    def expected_application_recorder_class(self) -> type[JetStreamApplicationRecorder]:
        return JetStreamApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[JetStreamTrackingRecorder]:
        return JetStreamTrackingRecorder

    def tracking_recorder_subclass(self) -> type[JetStreamTrackingRecorder]:
        return _TrackingRecorderSubclass

    def expected_process_recorder_class(self) -> type[JetStreamProcessRecorder]:
        return JetStreamProcessRecorder


class TestExampleApplication(ModuleSelected, es_application.ExampleApplicationTestCase):
    expected_factory_topic = get_topic(JetStreamFactory)
    app_name = "BankAccounts"
