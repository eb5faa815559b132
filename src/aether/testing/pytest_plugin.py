"""pytest fixtures backed by real nats-server processes (enable with ``-p aether.testing.pytest_plugin``).

Fixtures:
    anyio_backend        "asyncio" (session); async tests run under the anyio plugin.
    nats_server          one JetStream server for the whole session.
    nats_url             its URL.
    nc                   a nats-py client connected with aether.connect, closed after the test.
    nats_server_factory  starts extra servers (for tests that kill or pause them),
                         all cleaned up.
    nats_cluster_factory starts NatsCluster instances, all cleaned up.
    unique_name          a fresh stream/bucket-safe name per test.

Mark async tests with ``pytest.mark.anyio`` (e.g. ``pytestmark = pytest.mark.anyio``).
When no ``nats-server`` binary is found,
tests needing one fail with a clear message under ``CI=true`` and are skipped otherwise.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from aether.connect import close, connect
from aether.errors import NatsServerError
from aether.server import NatsCluster, NatsServer, find_nats_server

__all__ = ["anyio_backend", "nats_cluster_factory", "nats_server", "nats_server_factory", "nats_url", "nc",
           "unique_name"]

_names = itertools.count(1)


def _require_binary() -> None:
    try:
        find_nats_server()
    except NatsServerError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"integration tests need nats-server in CI: {exc}", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    _require_binary()
    server = NatsServer()
    server.start_sync()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Any]:
    client = await connect(nats_url, connect_timeout=5.0, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        yield client
    finally:
        await close(client)


@pytest.fixture
def nats_server_factory() -> Iterator[Callable[..., NatsServer]]:
    _require_binary()
    started: list[NatsServer] = []

    def factory(**kwargs: Any) -> NatsServer:
        server = NatsServer(**kwargs)
        server.start_sync()
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in started:
            server.cleanup()


@pytest.fixture
def nats_cluster_factory() -> Iterator[Callable[..., NatsCluster]]:
    _require_binary()
    started: list[NatsCluster] = []

    def factory(size: int = 3, **kwargs: Any) -> NatsCluster:
        cluster = NatsCluster(size, **kwargs)
        started.append(cluster)
        cluster.start_sync()
        return cluster

    try:
        yield factory
    finally:
        for cluster in started:
            cluster.cleanup()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:40].strip("-")
    return f"T{next(_names)}-{os.getpid()}-{base}".replace("--", "-")[:60].rstrip("-_")
