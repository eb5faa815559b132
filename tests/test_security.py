"""Authenticated, encrypted connections through aether.connect: user/password, token, NKey seed,
creds file (JWT) and TLS with a client certificate, each against a nats-server configured for it."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aether import Event
from aether.connect import connect
from aether.errors import AetherError, InvalidInputError, NatsConnectionError, PermissionDeniedError
from aether.store import JetStreamEventStore
from aether.testing import NatsServer, wait_for
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


def test_test_pki_passes_strict_x509_verification(tmp_path: Path) -> None:
    """Python 3.13 verifies with VERIFY_X509_STRICT by default: the test PKI must pass it on every
    version (key identifiers, basic constraints, key usage); checked here with the flag set
    explicitly, by a real TLS handshake in both directions (server and client certificates)."""
    tls = make_tls_files(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
    server_ctx.load_cert_chain(str(tls.server_cert), str(tls.server_key))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    client_ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    client_in, server_in = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(server_in, client_in, server_hostname="localhost")
    server = server_ctx.wrap_bio(client_in, server_in, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):  # each side's output is the other's input: step until both are done
        for side_name, side in (("client", client), ("server", server)):
            if not done[side_name]:
                try:
                    side.do_handshake()
                    done[side_name] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            break
    assert all(done.values())
    peer = server.getpeercert()
    assert peer is not None and peer["subject"] == ((("commonName", "aether-client"),),)


async def test_tls_is_never_downgraded_to_plaintext(nats_server: NatsServer, tmp_path: Path) -> None:
    """A tls:// URL, or a TLS CA / client certificate, against a server without TLS: one clear
    NatsConnectionError at once (not a plaintext connection, not a wait for the timeout)."""
    tls = make_tls_files(tmp_path)
    plain = f"tls://127.0.0.1:{nats_server.port}"
    cases: list[tuple[str, dict[str, Any]]] = [
        (plain, {}),
        (nats_server.url, {"tls_ca": tls.ca}),
        (nats_server.url, {"tls_ca": tls.ca, "tls_cert": tls.client_cert, "tls_key": tls.client_key}),
    ]
    for url, options in cases:
        started = time.monotonic()
        with pytest.raises(NatsConnectionError, match="does not offer TLS") as caught:
            await connect(url, connect_timeout=20, **options)
        assert time.monotonic() - started < 10  # refused at once, not after connect_timeout
        assert "\n" not in str(caught.value)
    # the same server is reachable in plaintext when TLS is not asked for
    nc = await connect(nats_server.url)
    await nc.close()


async def tls_versions(server: NatsServer, name: str) -> list[str | None]:
    """The TLS version of each connection named ``name``, as the server reports it (``/connz``)."""
    def read() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.monitor_port}/connz", timeout=10) as resp:
            connz: dict[str, Any] = json.loads(resp.read())
        return connz

    connz = await asyncio.to_thread(read)
    return [conn.get("tls_version") for conn in connz["connections"] if conn.get("name") == name]


async def test_tls_upgrades_when_the_server_allows_but_does_not_require_it(
        nats_server_factory: Callable[..., NatsServer], tmp_path: Path) -> None:
    """A server with ``allow_non_tls`` offers TLS without requiring it: a client that asked for TLS
    gets TLS (nats-py alone would stay in plaintext), one that did not may stay in plaintext."""
    tls = make_tls_files(tmp_path)
    server = nats_server_factory(extra_config=tls.server_config(verify=False) + "\nallow_non_tls: true")
    nc = await connect(f"tls://127.0.0.1:{server.port}", tls_ca=tls.ca, name="asked-for-tls")
    plain = await connect(f"nats://127.0.0.1:{server.port}", name="plaintext")
    try:
        [version] = await tls_versions(server, "asked-for-tls")
        assert version  # e.g. "1.3"
        assert await tls_versions(server, "plaintext") == [None]  # the check tells the two apart
    finally:
        await plain.close()
        await nc.close()


async def test_reconnection_never_falls_back_to_plaintext(nats_server_factory: Callable[..., NatsServer],
                                                          tmp_path: Path) -> None:
    """Connected over TLS; the server goes away and a plaintext server takes its address: the
    client refuses it on every reconnection attempt (stays disconnected), and reconnects once a
    TLS server is back on that address."""
    tls = make_tls_files(tmp_path)
    tls_server = nats_server_factory(extra_config=tls.server_config(verify=False))
    port = tls_server.port
    errors: list[Exception] = []
    reconnected = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    async def on_reconnected() -> None:
        reconnected.set()

    nc = await connect(f"tls://127.0.0.1:{port}", tls_ca=tls.ca, error_cb=on_error, reconnected_cb=on_reconnected,
                       reconnect_time_wait=0.1, name="tls-client")
    try:
        tls_server.cleanup()
        plain = nats_server_factory(port=port)
        await wait_for(lambda: any("does not offer TLS" in str(e) for e in errors), timeout=30)
        assert not nc.is_connected and not reconnected.is_set()
        plain.cleanup()
        back = nats_server_factory(port=port, extra_config=tls.server_config(verify=False))
        await asyncio.wait_for(reconnected.wait(), 60)
        [version] = await tls_versions(back, "tls-client")
        assert version
    finally:
        await nc.close()


async def test_unreachable_server_is_one_clear_error() -> None:
    with pytest.raises(NatsConnectionError, match="cannot connect"):
        await connect("nats://127.0.0.1:1", connect_timeout=1)
