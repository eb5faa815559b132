"""Authenticated, encrypted connections through aether.connect: user/password, token, NKey seed,
creds file (JWT) and TLS with a client certificate, each against a nats-server configured for it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aether import Event
from aether.connect import connect
from aether.errors import AetherError, InvalidInputError, NatsConnectionError, PermissionDeniedError
from aether.store import JetStreamEventStore
from aether.testing import NatsServer
from aether.testing.security import make_jwt_setup, make_nkey_user, make_tls_files

pytestmark = pytest.mark.anyio


async def _round_trip(nc: Any, name: str) -> None:
    try:
        store = await JetStreamEventStore.create(nc, name)
        await store.save_event(Event("E", "acc", 1, {"secure": True}))
        assert [e.data for e in await store.get_events("acc")] == [{"secure": True}]
    finally:
        await nc.close()


async def test_user_password(nats_server_factory: Callable[..., NatsServer]) -> None:
    users = json.dumps([{"user": "app", "password": "s3cret"}])
    server = nats_server_factory(extra_config=f"authorization {{ users = {users} }}")
    await _round_trip(await connect(server.url, user="app", password="s3cret"), "USERPW")
    with pytest.raises(PermissionDeniedError):
        await connect(server.url, user="app", password="wrong", connect_timeout=5)
    with pytest.raises(PermissionDeniedError):
        await connect(server.url, connect_timeout=5)
    with pytest.raises(InvalidInputError):
        await connect(server.url, user="app")


async def test_token(nats_server_factory: Callable[..., NatsServer]) -> None:
    server = nats_server_factory(extra_config='authorization { token: "t0ken-abc" }')
    await _round_trip(await connect(server.url, token="t0ken-abc"), "TOKEN")
    with pytest.raises(PermissionDeniedError):
        await connect(server.url, token="nope", connect_timeout=5)


async def test_nkey_seed(nats_server_factory: Callable[..., NatsServer], tmp_path: Path) -> None:
    seed, public = make_nkey_user()
    server = nats_server_factory(extra_config=f"authorization {{ users = [ {{ nkey: {public} }} ] }}")
    seed_file = tmp_path / "user.nk"
    seed_file.write_text(seed)
    await _round_trip(await connect(server.url, nkey_seed=seed_file), "NKEY")
    other_seed, _ = make_nkey_user()
    other = tmp_path / "other.nk"
    other.write_text(other_seed)
    with pytest.raises(PermissionDeniedError):
        await connect(server.url, nkey_seed=other, connect_timeout=5)
    with pytest.raises(InvalidInputError):
        await connect(server.url, nkey_seed=tmp_path / "missing.nk")


async def test_creds_file(nats_server_factory: Callable[..., NatsServer], tmp_path: Path) -> None:
    config, accounts = make_jwt_setup(["APP"])
    server = nats_server_factory(extra_config=config)
    creds = accounts["APP"].creds(tmp_path, "alice")
    await _round_trip(await connect(server.url, creds=creds), "CREDS")
    _, strangers = make_jwt_setup(["APP"])  # signed by another operator: refused
    with pytest.raises(PermissionDeniedError):
        await connect(server.url, creds=strangers["APP"].creds(tmp_path, "mallory"), connect_timeout=5)


async def test_tls_with_client_certificate(nats_server_factory: Callable[..., NatsServer], tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    server = nats_server_factory(extra_config=tls.server_config(verify=True))
    url = f"tls://127.0.0.1:{server.port}"
    await _round_trip(await connect(url, tls_ca=tls.ca, tls_cert=tls.client_cert, tls_key=tls.client_key), "TLS")
    # without a client certificate the server refuses the handshake
    with pytest.raises(AetherError):
        await connect(url, tls_ca=tls.ca, connect_timeout=3)
    # a client that does not trust the server's CA refuses the server
    with pytest.raises(NatsConnectionError):
        await connect(url, tls_cert=tls.client_cert, tls_key=tls.client_key, connect_timeout=3)
    with pytest.raises(InvalidInputError):
        await connect(url, tls_ca=tls.ca, tls_cert=tls.client_cert)


async def test_unreachable_server_is_one_clear_error() -> None:
    with pytest.raises(NatsConnectionError, match="cannot connect"):
        await connect("nats://127.0.0.1:1", connect_timeout=1)
