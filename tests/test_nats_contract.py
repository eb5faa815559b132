"""What the adapter (``aether._nats``, ``aether.connect``) relies on from the installed nats-py.

Only the adapter speaks nats-py; this file pins every piece of nats-py's public API and behaviour
it depends on, so that a nats-py upgrade (or the move to its successor packages) that changes one
fails here, loudly and by name, instead of somewhere deep in a component. Behaviour is checked
against a real nats-server.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import nats
import nats.aio.client
import nats.aio.msg
import nats.aio.subscription
import nats.errors
import nats.js.errors
import pytest

from aether._nats import (
    BUS_ERRORS,
    NOT_SENT_ERRORS,
    STORE_ERRORS,
    JsApi,
    inbox_root,
    is_payload_too_large,
    translate_nats_error,
)
from aether._nats.errors import _TABLE, parse_permission_denial
from aether.connect import connect
from aether.errors import (
    AetherTimeoutError,
    JetStreamApiError,
    NatsConnectionError,
    PermissionDeniedError,
    StoreError,
    StoreUnavailableError,
)
from aether.permissions import authorization_config
from aether.testing import NatsServer, wait_for

Client = nats.aio.client.Client
pytestmark = pytest.mark.anyio


def _params(func: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(func).parameters)


# ---- the public API the adapter calls --------------------------------------------------------------


def test_client_methods_and_parameters_the_adapter_calls() -> None:
    assert {"subject", "cb", "pending_bytes_limit", "pending_msgs_limit"} <= _params(Client.subscribe)
    assert {"subject", "payload", "reply", "headers"} <= _params(Client.publish)
    assert inspect.iscoroutinefunction(Client.subscribe) and inspect.iscoroutinefunction(Client.publish)
    # aether.connect builds its keyword arguments from these names
    assert {"servers", "error_cb", "connect_timeout", "max_reconnect_attempts", "reconnect_time_wait",
            "allow_reconnect", "user", "password", "token", "user_credentials", "nkeys_seed", "tls",
            "tls_hostname", "name", "inbox_prefix", "disconnected_cb", "reconnected_cb",
            "closed_cb"} <= _params(Client.connect)
    for name in ("new_inbox", "close", "drain", "flush"):
        assert callable(getattr(Client, name)), name
    for name in ("is_connected", "is_closed", "is_reconnecting", "max_payload"):
        assert isinstance(inspect.getattr_static(Client, name), property), name
    assert {"subject", "reply", "data", "headers"} <= {f for f in nats.aio.msg.Msg.__dataclass_fields__}
    sub = nats.aio.subscription.Subscription
    assert inspect.iscoroutinefunction(sub.unsubscribe)
    assert isinstance(inspect.getattr_static(sub, "pending_msgs"), property)


def test_the_error_classes_in_the_table_exist_and_nest_as_assumed() -> None:
    classes = {cls for row, _ in _TABLE for cls in row} | set(NOT_SENT_ERRORS)
    nats_classes = {c for c in classes if c.__module__.startswith("nats")}
    assert len(nats_classes) >= 9
    for cls in nats_classes:
        assert issubclass(cls, nats.errors.Error), cls
    # nats-py's timeout is a builtin TimeoutError (hence an OSError): the table checks it first
    assert issubclass(nats.errors.TimeoutError, TimeoutError)
    assert _TABLE[0][0][0] is nats.errors.TimeoutError
    api = nats.js.errors.APIError(code=400, description="wrong last sequence: 3", err_code=10071)
    assert (api.code, api.err_code, api.description) == (400, 10071, "wrong last sequence: 3")


@pytest.mark.parametrize(("exc", "store", "bus"), [
    (nats.errors.TimeoutError(), AetherTimeoutError, AetherTimeoutError),
    (nats.errors.ConnectionClosedError(), StoreUnavailableError, NatsConnectionError),
    (nats.errors.OutboundBufferLimitError(), StoreUnavailableError, NatsConnectionError),
    (nats.errors.NoServersError(), StoreUnavailableError, NatsConnectionError),
    (nats.errors.NoRespondersError(), StoreError, NatsConnectionError),
    (nats.errors.MaxPayloadError(), StoreError, NatsConnectionError),
    (nats.js.errors.APIError(code=400, description="bad", err_code=10059), JetStreamApiError, JetStreamApiError),
    (nats.errors.Error("nats: permissions violation for publish to \"x.y\""), PermissionDeniedError,
     PermissionDeniedError),
    (nats.errors.Error("something else"), StoreError, NatsConnectionError),
])
def test_one_table_per_component_classes(exc: Exception, store: type[Exception], bus: type[Exception]) -> None:
    assert type(translate_nats_error(exc, "x", STORE_ERRORS)) is store
    assert type(translate_nats_error(exc, "x", BUS_ERRORS)) is bus
    assert type(translate_nats_error(exc, "x")) is store  # the default: the stores' classes


# ---- behaviour against a real server ----------------------------------------------------------------


async def test_new_inbox_is_prefix_dot_token(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url, inbox_prefix="_INBOX_contract")
    try:
        inbox = nc.new_inbox()
        assert inbox.startswith("_INBOX_contract.") and "." not in inbox[len("_INBOX_contract."):]
        assert inbox_root(nc) == "_INBOX_contract"
    finally:
        await nc.close()


async def test_subscribe_calls_an_async_callback_with_the_message(nc: Client) -> None:
    got: asyncio.Queue[nats.aio.msg.Msg] = asyncio.Queue()

    async def cb(msg: nats.aio.msg.Msg) -> None:
        await got.put(msg)

    sub = await nc.subscribe("contract.cb.>", cb=cb, pending_bytes_limit=0)
    await nc.publish("contract.cb.a.b", b"plain", reply="contract.reply")
    await nc.publish("contract.cb.c", b"with", headers={"K": "v"})
    first, second = await asyncio.wait_for(got.get(), 10), await asyncio.wait_for(got.get(), 10)
    assert (first.subject, first.data, first.reply, first.headers) == ("contract.cb.a.b", b"plain",
                                                                        "contract.reply", None)
    assert second.headers == {"K": "v"}
    assert sub.pending_msgs == 0
    await sub.unsubscribe()


async def test_status_replies_arrive_as_status_headers(nc: Client, unique_name: str) -> None:
    """The inbox tells a reply from an end-of-batch or error by the ``Status`` header nats-py parses
    out of ``NATS/1.0 <code> <text>``."""
    got: asyncio.Queue[nats.aio.msg.Msg] = asyncio.Queue()

    async def cb(msg: nats.aio.msg.Msg) -> None:
        await got.put(msg)

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox + ".>", cb=cb)
    await nc.publish("contract.nobody.listens", b"", reply=inbox + ".1")
    no_responders = await asyncio.wait_for(got.get(), 10)
    assert no_responders.headers is not None and no_responders.headers.get("Status") == "503"
    api = JsApi(nc)
    await api.api(f"STREAM.CREATE.{unique_name}", {"name": unique_name, "subjects": [f"{unique_name}.>"],
                                                    "allow_direct": True})
    await nc.publish(f"$JS.API.DIRECT.GET.{unique_name}", b'{"seq":1}', reply=inbox + ".2")
    missing = await asyncio.wait_for(got.get(), 10)
    assert missing.headers is not None and missing.headers.get("Status") == "404"
    assert (await api.publish_acked(f"{unique_name}.a", b"one", {})).seq == 1  # stored before it is read
    await nc.publish(f"$JS.API.DIRECT.GET.{unique_name}", b'{"seq":1,"batch":5}', reply=inbox + ".3")
    one, end = await asyncio.wait_for(got.get(), 10), await asyncio.wait_for(got.get(), 10)
    assert one.data == b"one" and one.headers is not None and one.headers["Nats-Sequence"] == "1"
    assert end.headers is not None and end.headers.get("Status") == "204"
    await sub.unsubscribe()
    await api.aclose()


async def test_publishes_that_never_leave_the_client_raise_not_sent_errors(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    with pytest.raises(NOT_SENT_ERRORS) as too_large:
        await nc.publish("contract.big", b"x" * (nc.max_payload + 1))
    assert is_payload_too_large(too_large.value)
    await nc.close()
    with pytest.raises(NOT_SENT_ERRORS) as closed:
        await nc.publish("contract.closed", b"")
    assert type(translate_nats_error(closed.value, "x")) is StoreUnavailableError
    assert nc.is_closed and not nc.is_connected and not nc.is_reconnecting
    assert "reconnects" in nc.stats


async def test_permission_violations_reach_the_error_callback_in_the_parsed_form(
        nats_server_factory: Callable[..., NatsServer]) -> None:
    perms = {"publish": {"allow": ["ok.>", "_INBOX.>"]}, "subscribe": {"allow": ["ok.>", "_INBOX.>"]}}
    server = nats_server_factory(extra_config=authorization_config(
        [{"user": "u", "password": "u-pw", "permissions": perms}]))
    seen: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        seen.append(exc)

    nc = await connect(server.url, user="u", password="u-pw", error_cb=on_error)
    try:
        await nc.publish("Denied.Publish", b"")
        await nc.subscribe("denied.sub", cb=on_error)  # type: ignore[arg-type]
        await nc.flush()
        await wait_for(lambda: len(seen) >= 2, timeout=10)
        parsed = sorted(p for p in (parse_permission_denial(str(e)) for e in seen) if p is not None)
        # nats-py lower-cases the server's text
        assert parsed == [("publish", "denied.publish"), ("subscription", "denied.sub")]
        assert isinstance(translate_nats_error(seen[0], "x"), PermissionDeniedError)
    finally:
        await nc.close()

