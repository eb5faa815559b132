"""Test helpers: start a test on empty streams, the way ``eventsourcing``'s PostgreSQL tests drop
their tables::

    from aether.integrations.eventsourcing.testing import drop_streams

    class TestMyRecorder(ApplicationRecorderTestCase):
        def setUp(self):
            drop_streams("MyApp")               # AETHER_NATS_URL from the environment
            self.factory = JetStreamFactory(Environment("MyApp"))
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from eventsourcing.utils import Environment

from aether._nats import JsApi
from aether._nats.streams import delete_stream
from aether.connect import close
from aether.integrations.eventsourcing._settings import Settings, purpose_stream

__all__ = ["delete_streams", "drop_streams", "streams_of"]


def streams_of(application_name: str, env: dict[str, str] | None = None, *,
               purposes: tuple[str, ...] = ("snapshots",)) -> list[str]:
    """The streams an application of that name uses with these settings: its own (events, tracking
    records) and one per aggregate-recorder purpose (``snapshots``).

    Raises:
        InvalidInputError / InvalidNameError: malformed settings or an unusable name.
    """
    stream = Settings.from_env(Environment(application_name, env)).stream
    return [stream, *(purpose_stream(stream, purpose) for purpose in purposes)]


def drop_streams(application_name: str, env: dict[str, str] | None = None, *,
                 purposes: tuple[str, ...] = ("snapshots",)) -> None:
    """Delete the application's streams (missing ones are fine). Settings as for the factory:
    ``env`` first, then the process environment (``AETHER_NATS_URL`` …).

    Raises:
        InvalidInputError / InvalidNameError: malformed settings or an unusable name.
        NatsConnectionError / PermissionDeniedError: the server cannot be reached or refuses.
        JetStreamApiError: the server refused a deletion.
    """
    delete_streams(streams_of(application_name, env, purposes=purposes), env, application_name=application_name)


def delete_streams(streams: Sequence[str], env: dict[str, str] | None = None, *, application_name: str = "") -> None:
    """Delete the named streams (missing ones are fine), connecting with the factory's settings
    for ``application_name`` (``env`` first, then the process environment).

    Raises:
        InvalidInputError: malformed settings.
        NatsConnectionError / PermissionDeniedError: the server cannot be reached or refuses.
        JetStreamApiError: the server refused a deletion.
    """
    settings = Settings.from_env(Environment(application_name, env))

    async def drop() -> None:
        nc = await settings.connect.connect()
        api = JsApi(nc, timeout=settings.timeout)
        try:
            for stream in streams:
                await delete_stream(api, stream)
        finally:
            await api.aclose()
            await close(nc)

    asyncio.run(drop())
