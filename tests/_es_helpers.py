"""Helpers for the eventsourcing-module tests: a module-wide nats-server and stream clean-up."""

from __future__ import annotations

import gc
import os

from eventsourcing.persistence import InfrastructureFactory

from aether.integrations.eventsourcing.testing import delete_streams
from aether.integrations.eventsourcing.testing import drop_streams as drop_application_streams
from aether.integrations.eventsourcing.testing import streams_of as _streams_of
from aether.testing import NatsServer

__all__ = ["MODULE", "ModuleSelected", "ModuleServer", "drop_streams", "streams_of"]

MODULE = "aether.integrations.eventsourcing"


def streams_of(application_name: str) -> list[str]:
    """The streams an application of that name uses (events and snapshots)."""
    return _streams_of(application_name, {})


def drop_streams(url: str, *streams: str) -> None:
    """Delete the streams (missing ones are fine)."""
    delete_streams(streams, {"AETHER_NATS_URL": url})


class ModuleServer:
    """One nats-server for a test module, published as ``AETHER_NATS_URL`` while it runs."""

    def __init__(self) -> None:
        self.server = NatsServer()
        self._saved: str | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start_sync()
        self._saved = os.environ.get("AETHER_NATS_URL")
        os.environ["AETHER_NATS_URL"] = self.server.url

    def stop(self) -> None:
        if self._saved is None:
            os.environ.pop("AETHER_NATS_URL", None)
        else:
            os.environ["AETHER_NATS_URL"] = self._saved
        self.server.stop_sync()
        self.server.cleanup()


class ModuleSelected:
    """A test-case mixin: each test starts on the empty streams of ``app_name`` (on the server in
    ``AETHER_NATS_URL``, see :class:`ModuleServer`) with this module as ``PERSISTENCE_MODULE``;
    afterwards the applications the case left open are collected (closing their connections) and
    the setting is restored."""

    app_name: str

    def setUp(self) -> None:
        drop_application_streams(self.app_name)
        self._saved_module = os.environ.get(InfrastructureFactory.PERSISTENCE_MODULE)
        os.environ[InfrastructureFactory.PERSISTENCE_MODULE] = MODULE
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        super().tearDown()  # type: ignore[misc]
        gc.collect()
        if self._saved_module is None:
            del os.environ[InfrastructureFactory.PERSISTENCE_MODULE]
        else:
            os.environ[InfrastructureFactory.PERSISTENCE_MODULE] = self._saved_module
