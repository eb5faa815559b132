"""Connect to NATS with the usual options, failing fast with one clear :class:`~aether.AetherError`.

Used by the ``aether`` command line, the examples and services::

    nc = await connect("nats://127.0.0.1:4222", user="app", password="secret")
    nc = await connect()    # $AETHER_NATS_URL, else nats://127.0.0.1:4222

nats-py's own ``connect`` keeps retrying an unreachable server and logs a traceback for every
attempt; this one gives up after ``connect_timeout`` seconds (or at once on bad credentials)
and raises:

* :class:`~aether.errors.NatsConnectionError`: the server cannot be reached in time;
* :class:`~aether.errors.PermissionDeniedError`: the server refused the credentials;
* :class:`~aether.errors.InvalidInputError`: bad options (a missing TLS or credentials file,
  a password without a user, …).

TLS is never downgraded: when it is asked for (a ``tls://`` URL, ``tls_ca``, ``tls_cert``), a
server that does not offer TLS is refused before anything (credentials included) is sent to it,
on the first connection (:class:`~aether.errors.NatsConnectionError` at once) and on every
reconnection (the client keeps looking for a server that speaks TLS).

Once connected, the client reconnects by itself (``max_reconnect_attempts=-1``: forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypedDict, Unpack

import nats.errors
from nats.aio.client import Client

from aether._nats import ErrorCallback, compose_error_callback
from aether._tasks import cancel_and_wait
from aether.errors import InvalidInputError, NatsConnectionError, PermissionDeniedError

__all__ = ["DEFAULT_URL", "ENV_URL", "ConnectCallbacks", "ConnectOptions", "check_url", "close", "connect",
           "resolve_servers"]

ENV_URL = "AETHER_NATS_URL"
"""Environment variable holding the default NATS URL (comma-separated for several servers)."""

DEFAULT_URL = "nats://127.0.0.1:4222"

log = logging.getLogger("aether.connect")

Callback = Callable[[], Awaitable[None]]


class ConnectCallbacks(TypedDict, total=False):
    """The connection callbacks :meth:`ConnectOptions.connect` passes on to :func:`connect`."""

    error_cb: ErrorCallback
    disconnected_cb: Callback
    reconnected_cb: Callback
    closed_cb: Callback


def resolve_servers(url: str | Sequence[str] | None = None) -> list[str]:
    """The server URLs to use: ``url`` (a string may list several, comma-separated), else
    ``$AETHER_NATS_URL``, else :data:`DEFAULT_URL`.

    Raises:
        InvalidInputError: an empty URL list, or a URL that :func:`check_url` refuses.
    """
    if url is None:
        url = os.environ.get(ENV_URL) or DEFAULT_URL
    items = url.split(",") if isinstance(url, str) else list(url)
    servers = [item.strip() for item in items if item and item.strip()]
    if not servers:
        raise InvalidInputError("no NATS server URL given")
    for server in servers:
        check_url(server)
    return servers


_SCHEMES = ("nats", "tls", "ws", "wss")


def check_url(url: str) -> None:
    """Refuse, at once, what cannot be a NATS server URL.

    Accepted: ``nats://``, ``tls://``, ``ws://`` and ``wss://`` URLs with a host (port optional,
    user info allowed), and ``host:port`` without a scheme (as nats-py accepts it).

    Raises:
        InvalidInputError: another scheme (``http://`` …), a bare word without a port, no host,
            or a port that is not a number from 1 to 65535.
    """
    text = url.strip()
    if "://" not in text:
        host, sep, digits = text.rpartition(":")
        if not sep or not host or not digits.isdigit():
            raise InvalidInputError(f"invalid NATS URL {url!r}: give a URL like nats://{text or 'HOST'}:4222")
        text = f"nats://{text}"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in _SCHEMES:
        raise InvalidInputError(f"invalid NATS URL {url!r}: the scheme must be nats://, tls://, ws:// or wss://")
    port: int | None
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or " " in parts.netloc or (port is not None and not 0 < port < 65536):
        raise InvalidInputError(f"invalid NATS URL {url!r}: expected {parts.scheme}://HOST[:PORT]")


def _file(kind: str, path: str | os.PathLike[str] | None) -> str | None:
    if path is None:
        return None
    text = os.fspath(path)
    if not os.path.isfile(text):
        raise InvalidInputError(f"{kind} file not found: {text}")
    return text


def _tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        raise InvalidInputError("TLS client authentication needs both a certificate and a key file")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        if cert is not None and key is not None:
            context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise InvalidInputError(f"cannot load TLS files: {exc}") from exc
    return context


class _PlaintextServerError(nats.errors.Error):
    """A server answered without TLS although TLS was asked for (raised inside nats-py's connect)."""

    def __str__(self) -> str:
        return "the server does not offer TLS, and TLS was asked for (refusing a plaintext connection)"


class _TlsOnlyClient(Client):
    """A nats-py client that upgrades every connection to TLS or drops it.

    nats-py upgrades only when the server's INFO says ``tls_required``: against a plaintext server
    a ``tls://`` URL or a TLS context silently gives a plaintext connection, and the CONNECT
    (with credentials) goes out in the clear. Here the INFO is checked before that: a server that
    offers TLS (``tls_available``) is upgraded; one that does not is an error, so nats-py moves on
    to the next server (or, on the first connection, :func:`connect` fails at once).
    """

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if initial_connection and not info.get("tls_required"):
            if not info.get("tls_available"):
                if self._transport is not None:
                    self._transport.close()  # type: ignore[no-untyped-call]  # nats-py leaves it open on a failed reconnect
                raise _PlaintextServerError()
            info["tls_required"] = True  # the server allows TLS: nats-py upgrades on this flag
        await super()._process_info(info, initial_connection)


def _tls_requested(servers: Sequence[str], tls: ssl.SSLContext | None) -> bool:
    return tls is not None or any(server.lower().startswith("tls://") for server in servers)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip() or type(exc).__name__
    return text.removeprefix("nats: ")


async def connect(url: str | Sequence[str] | None = None, *, user: str | None = None, password: str | None = None,
                  token: str | None = None, creds: str | os.PathLike[str] | None = None,
                  nkey_seed: str | os.PathLike[str] | None = None, tls_ca: str | os.PathLike[str] | None = None,
                  tls_cert: str | os.PathLike[str] | None = None, tls_key: str | os.PathLike[str] | None = None,
                  tls_hostname: str | None = None, name: str | None = None, inbox_prefix: str | None = None,
                  connect_timeout: float = 5.0, retry_refused: bool = True,
                  max_reconnect_attempts: int = -1, reconnect_time_wait: float = 0.5,
                  error_cb: ErrorCallback | None = None, disconnected_cb: Callback | None = None,
                  reconnected_cb: Callback | None = None, closed_cb: Callback | None = None) -> Client:
    """Connect a nats-py client.

    Args:
        url: server URL(s); see :func:`resolve_servers`.
        user, password: user/password authentication (both or neither).
        token: token authentication.
        creds: a ``.creds`` file (JWT + nkey seed).
        nkey_seed: a file holding an nkey seed.
        tls_ca: CA bundle to verify the server; tls_cert / tls_key: client certificate and key.
        tls_hostname: server name to verify when it differs from the URL's host.
        name: the connection name shown by the server's monitoring.
        inbox_prefix: the prefix of the client's reply subjects (default ``_INBOX``); give each
            tenant its own and allow it only ``<prefix>.>`` (see :mod:`aether.permissions`).
        connect_timeout: seconds to wait for the first connection, in all.
        retry_refused: keep trying servers that refuse the connection (nothing listens there)
            until ``connect_timeout``; ``False`` fails at once when every server refused (the
            command line does so).
        max_reconnect_attempts: reconnect attempts per server after a disconnect (-1: forever).
        reconnect_time_wait: seconds between reconnect attempts to one server.
        error_cb, disconnected_cb, reconnected_cb, closed_cb: nats-py callbacks. Without
            ``error_cb``, connection errors are logged at DEBUG level on ``aether.connect``.
            Aether's own error handling (permission violations reported at once to the stores,
            the bus and the cluster) runs before ``error_cb``; a client connected with plain
            ``nats.connect`` lacks it (see :func:`aether._nats.watch_permission_denials`).

    Returns:
        a connected ``nats.aio.client.Client`` (the caller closes it).

    Raises:
        NatsConnectionError: not connected within ``connect_timeout`` (or, with
            ``retry_refused=False``, every server refused the connection).
        PermissionDeniedError: authentication or authorization failed.
        InvalidInputError: inconsistent options, missing files, or a bad URL (see :func:`check_url`).
    """
    servers = resolve_servers(url)
    if (user is None) != (password is None):
        raise InvalidInputError("user and password go together: give both or neither")
    if sum(x is not None for x in (user, token, creds, nkey_seed)) > 1:
        raise InvalidInputError("choose one authentication method: user/password, token, creds or nkey seed")
    if connect_timeout <= 0:
        raise InvalidInputError("connect_timeout must be > 0")
    if inbox_prefix is not None:
        from aether.names import validate_subject_prefix

        validate_subject_prefix(inbox_prefix)
    creds_file = _file("credentials", creds)
    seed_file = _file("nkey seed", nkey_seed)
    tls = _tls_context(_file("TLS CA", tls_ca), _file("TLS certificate", tls_cert), _file("TLS key", tls_key))

    give_up = asyncio.Event()
    last_error: list[BaseException] = []
    refused = _RefusalCount(len(servers))

    async def on_error(exc: Exception) -> None:
        last_error[:] = [exc]
        refused.record(exc)
        if isinstance(exc, nats.errors.AuthorizationError) or "authorization" in str(exc).lower():
            give_up.set()
        if isinstance(exc, _PlaintextServerError) and not nc.is_connected:
            give_up.set()  # as final as refused credentials
        if error_cb is not None:
            await error_cb(exc)
        else:
            log.debug("NATS connection error: %s", _describe(exc))

    nc = _TlsOnlyClient() if _tls_requested(servers, tls) else Client()
    kwargs: dict[str, Any] = {
        "servers": servers,
        # Aether's permission watch runs first, then the caller's error_cb (composed here: nats-py
        # has no public way to add an error callback later)
        "error_cb": compose_error_callback(nc, on_error),
        "connect_timeout": min(connect_timeout, 2.0),
        "max_reconnect_attempts": max_reconnect_attempts,
        "reconnect_time_wait": reconnect_time_wait,
        "allow_reconnect": True,
    }
    optional = {"user": user, "password": password, "token": token, "user_credentials": creds_file,
                "nkeys_seed": seed_file, "tls": tls, "tls_hostname": tls_hostname, "name": name,
                "inbox_prefix": inbox_prefix, "disconnected_cb": disconnected_cb, "reconnected_cb": reconnected_cb,
                "closed_cb": closed_cb}
    kwargs.update({k: v for k, v in optional.items() if v is not None})

    task = asyncio.ensure_future(nc.connect(**kwargs))
    waiter = asyncio.ensure_future(give_up.wait())
    all_refused = asyncio.ensure_future(refused.everywhere.wait() if not retry_refused else asyncio.Event().wait())
    try:
        done, _ = await asyncio.wait({task, waiter, all_refused}, timeout=connect_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        waiter.cancel()
        all_refused.cancel()
        with contextlib.suppress(Exception):
            await close(nc)
        raise
    waiter.cancel()
    all_refused.cancel()
    where = ", ".join(servers)
    if task in done and task.exception() is None and nc.is_connected:
        return nc
    failure: BaseException | None = None
    if task in done:
        failure = task.exception()
    else:
        await cancel_and_wait(task)  # its own CancelledError stays in it; the caller's propagates
    with contextlib.suppress(Exception):
        await close(nc)
    if failure is None and last_error:
        failure = last_error[0]
    if isinstance(failure, _PlaintextServerError):
        raise NatsConnectionError(f"NATS at {where} does not offer TLS, and TLS was asked for "
                                  "(tls:// URL or TLS CA/certificate): refusing a plaintext connection")
    if give_up.is_set() or isinstance(failure, nats.errors.AuthorizationError):
        raise PermissionDeniedError(f"NATS at {where} refused the credentials (authorization violation)")
    if isinstance(failure, ImportError):
        raise InvalidInputError(f"credentials need the 'nkeys' package: pip install nkeys ({failure})")
    if isinstance(failure, nats.errors.InvalidUserCredentialsError):
        raise InvalidInputError(f"invalid credentials file: {failure}")
    if isinstance(failure, nats.errors.Error) and "invalid connect url" in str(failure).lower():
        raise InvalidInputError(f"invalid NATS URL: {where}")
    reason = _describe(failure)
    if refused.everywhere.is_set() and not retry_refused:
        raise NatsConnectionError(f"cannot connect to NATS at {where}: connection refused (no server listens there)")
    raise NatsConnectionError(f"cannot connect to NATS at {where} within {connect_timeout:g}s: {reason}")


class _RefusalCount:
    """Sets ``everywhere`` once every server refused the connection in a row (nothing listens)."""

    def __init__(self, servers: int) -> None:
        self.servers = servers
        self.in_a_row = 0
        self.everywhere = asyncio.Event()

    def record(self, exc: BaseException) -> None:
        self.in_a_row = self.in_a_row + 1 if isinstance(exc, ConnectionRefusedError) else 0
        if self.in_a_row >= self.servers:
            self.everywhere.set()


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectOptions:
    """The connection options of :func:`connect`, kept together (e.g. by the command line)."""

    url: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    nkey_seed: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_hostname: str | None = None
    name: str | None = None
    connect_timeout: float = 5.0
    retry_refused: bool = True

    async def connect(self, *, name: str | None = None, **callbacks: Unpack[ConnectCallbacks]) -> Client:
        """:func:`connect` with these options (``name``, when given, replaces :attr:`name`) and these
        callbacks (same errors)."""
        fields = asdict(self)
        if name is not None:
            fields["name"] = name
        url = fields.pop("url")
        return await connect(url, **fields, **callbacks)

    def as_args(self) -> list[str]:
        """The non-secret options as ``aether`` command-line arguments (for child processes).

        Secrets (password, token) are left out: pass :meth:`as_env` as the child's environment.
        """
        args: list[str] = []
        for key in ("url", "user", "creds", "nkey_seed", "tls_ca", "tls_cert", "tls_key"):
            value = getattr(self, key)
            if value is not None:
                args += ["--nats-url" if key == "url" else f"--{key.replace('_', '-')}", str(value)]
        if self.connect_timeout != 5.0:
            args += ["--connect-timeout", str(self.connect_timeout)]
        return args

    def as_env(self) -> dict[str, str]:
        """The secret options as the environment variables the ``aether`` command line reads."""
        env: dict[str, str] = {}
        if self.password is not None:
            env["AETHER_NATS_PASSWORD"] = self.password
        if self.token is not None:
            env["AETHER_NATS_TOKEN"] = self.token
        return env


async def close(nc: Client) -> None:
    """Close a nats-py client, also while it is reconnecting.

    nats-py's ``close()`` during a reconnection can end with the ``CancelledError`` of the
    transport it tears down although nobody cancelled the caller; that one is swallowed here.
    The close runs in its own task, so a real cancellation of the caller still propagates (and
    the close finishes in the background).
    """
    closing = asyncio.ensure_future(nc.close())
    closing.add_done_callback(_retrieve)  # nobody may be left to await it
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        if not closing.done():
            raise  # the caller was cancelled
        # nats-py's own stray cancellation: the client is closed all the same


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
