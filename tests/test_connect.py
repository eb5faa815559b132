"""aether.connect: one clear AetherError instead of nats-py's endless retries."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aether.connect import DEFAULT_URL, ConnectOptions, close, connect, resolve_servers
from aether.errors import InvalidInputError, NatsConnectionError, PermissionDeniedError
from aether.testing import NatsServer, wait_for

pytestmark = pytest.mark.anyio


def test_resolve_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AETHER_NATS_URL", raising=False)
    assert resolve_servers() == [DEFAULT_URL]
    monkeypatch.setenv("AETHER_NATS_URL", "nats://a:1, nats://b:2")
    assert resolve_servers() == ["nats://a:1", "nats://b:2"]
    assert resolve_servers("nats://c:3") == ["nats://c:3"]
    assert resolve_servers(["nats://d:4"]) == ["nats://d:4"]
    with pytest.raises(InvalidInputError):
        resolve_servers(" , ")


async def test_connects(nats_url: str) -> None:
    nc = await connect(nats_url, name="t")
    try:
        assert nc.is_connected
    finally:
        await nc.close()


async def test_unreachable_fails_within_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(NatsConnectionError, match="connection refused"):
        await connect("nats://127.0.0.1:1", connect_timeout=1.0)
    assert time.monotonic() - started < 10


async def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="user and password"):
        await connect("nats://127.0.0.1:1", user="u")
    with pytest.raises(InvalidInputError, match="one authentication method"):
        await connect("nats://127.0.0.1:1", user="u", password="p", token="t")
    with pytest.raises(InvalidInputError, match="credentials file not found"):
        await connect("nats://127.0.0.1:1", creds=tmp_path / "missing.creds")
    with pytest.raises(InvalidInputError, match="both a certificate and a key"):
        (tmp_path / "cert.pem").write_text("x")
        await connect("nats://127.0.0.1:1", tls_cert=tmp_path / "cert.pem")
    with pytest.raises(InvalidInputError, match="cannot load TLS files"):
        await connect("nats://127.0.0.1:1", tls_ca=tmp_path / "cert.pem")
    with pytest.raises(InvalidInputError, match="invalid NATS URL"):
        await connect("nats://bad host:x", connect_timeout=1.0)


async def test_credentials(nats_server_factory: Callable[..., NatsServer]) -> None:
    server = nats_server_factory(extra_config="authorization { user: app, password: pw }")
    nc = await connect(server.url, user="app", password="pw")
    await nc.close()
    for kwargs in ({"user": "app", "password": "wrong"}, {}):
        with pytest.raises(PermissionDeniedError, match="refused the credentials"):
            await connect(server.url, connect_timeout=5.0, **kwargs)  # type: ignore[arg-type]
    token_server = nats_server_factory(extra_config="authorization { token: s3cret }")
    nc = await ConnectOptions(url=token_server.url, token="s3cret").connect()
    await nc.close()


def test_options_for_child_processes() -> None:
    options = ConnectOptions(url="nats://x:1", user="u", password="p", token=None, tls_ca="/ca.pem",
                             connect_timeout=2.0)
    assert options.as_args() == ["--nats-url", "nats://x:1", "--user", "u", "--tls-ca", "/ca.pem",
                                 "--connect-timeout", "2.0"]
    assert "p" not in options.as_args()
    assert options.as_env() == {"AETHER_NATS_PASSWORD": "p"}


async def test_close_while_reconnecting(nats_server_factory: Callable[..., NatsServer]) -> None:
    """``close()`` works on a client that is reconnecting to a dead server (nats-py's own close can
    raise a stray CancelledError there)."""
    for _ in range(5):
        server = nats_server_factory()
        nc = await connect(server.url, reconnect_time_wait=0.05)
        await server.kill()
        await wait_for(lambda nc=nc: not nc.is_connected, timeout=10, message="disconnect")  # type: ignore[misc, arg-type]
        await close(nc)
        assert nc.is_closed
