"""eventsourcing's ApplicationTestCase (its general application tests) on the JetStream module.

Not required by the issue (the example application case is in test_eventsourcing_suite.py), run for
extra coverage. Its ``test_application_log`` checks that a DeprecationWarning is *recorded*; the
project turns warnings into errors, so this module restores the default action for it.
"""

from __future__ import annotations

import pytest
from eventsourcing.tests import application as es_application

from _es_helpers import ModuleSelected, ModuleServer

pytestmark = pytest.mark.filterwarnings("always::DeprecationWarning")

_server = ModuleServer()


def setUpModule() -> None:
    _server.start()


def tearDownModule() -> None:
    _server.stop()


class TestApplication(ModuleSelected, es_application.ApplicationTestCase):
    app_name = "Application"
