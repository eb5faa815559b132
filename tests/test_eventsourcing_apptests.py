"""eventsourcing's ApplicationTestCase (its general application tests) on the JetStream module.

Not required by the issue (the example application case is in test_eventsourcing_suite.py), run for
extra coverage. Its ``test_application_log`` checks that a DeprecationWarning is *recorded*; the
project turns warnings into errors, so this module restores the default action for it.
"""

from __future__ import annotations

import gc
import os

import pytest
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.tests import application as es_application

from _es_helpers import ModuleServer, drop_streams, streams_of

pytestmark = pytest.mark.filterwarnings("always::DeprecationWarning")

MODULE = "aether.integrations.eventsourcing"
_server = ModuleServer()


def setUpModule() -> None:
    _server.start()


def tearDownModule() -> None:
    _server.stop()


class TestApplication(es_application.ApplicationTestCase):
    def setUp(self) -> None:
        drop_streams(_server.url, *streams_of("Application"))
        self._saved = os.environ.get(InfrastructureFactory.PERSISTENCE_MODULE)
        os.environ[InfrastructureFactory.PERSISTENCE_MODULE] = MODULE
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        gc.collect()  # the case leaves its applications open: closing them closes their connections
        if self._saved is None:
            del os.environ[InfrastructureFactory.PERSISTENCE_MODULE]
        else:
            os.environ[InfrastructureFactory.PERSISTENCE_MODULE] = self._saved
