"""A thin, fast layer over a connected nats-py client for the JetStream API calls Aether makes.

One wildcard reply subscription multiplexes every request (as nats-py's own ``request``
does) but decodes acks with msgspec and supports multi-message replies (batch direct get).
Every nats-py error is translated into an :class:`~aether.errors.AetherError` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Protocol, TypeVar, cast

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from aether.errors import (
    AetherError,
    AetherTimeoutError,
    InvalidInputError,
    JetStreamApiError,
    PermissionDeniedError,
    StoreError,
    StoreUnavailableError,
)

__all__ = ["ApiError", "DenialListener", "ErrorCallback", "JetStreamApiError", "JsApi", "PubAck", "check_client",
           "compose_error_callback", "inbox_root", "refused_or", "translate_nats_error", "watch_permission_denials"]

T = TypeVar("T")


def check_client(nc: object, who: str) -> None:
    """Raise InvalidInputError unless ``nc`` is a nats-py client (checked before any I/O)."""
    if not isinstance(nc, Client):
        raise InvalidInputError(f"{who} needs a connected nats-py client (nats.aio.client.Client), got "
                                f"{type(nc).__name__}")


class ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None
    batch: str = ""
    count: int = 0


_decode_ack = msgspec.json.Decoder(PubAck).decode
_decode_any = msgspec.json.Decoder().decode
_encode_json = msgspec.json.encode

ERR_WRONG_LAST_SEQUENCE = 10071
ERR_WRONG_LAST_SEQUENCE_CLUSTERED = 10164  # the same check, as reported by a clustered stream
WRONG_LAST_SEQUENCE_CODES = frozenset({10071, 10164})
"""Every code a lost compare-and-set (expected last sequence) comes back with."""
ERR_STREAM_NOT_FOUND = 10059
ERR_STREAM_NAME_IN_USE = 10058
ERR_MESSAGE_TOO_LARGE = 10054
ERR_NO_MESSAGE_FOUND = 10037
ERR_BATCH_DUPLICATE_MSG_ID = 10201


def translate_nats_error(exc: BaseException, what: str) -> AetherError:
    """Map a nats-py (or asyncio) exception to the matching AetherError."""
    if isinstance(exc, AetherError):
        return exc
    if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError | TimeoutError):
        return AetherTimeoutError(f"{what}: no reply from NATS in time")
    if isinstance(exc, nats.errors.NoRespondersError):
        return StoreError(f"{what}: no JetStream responder (is JetStream enabled, does the stream exist?)")
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionDrainingError
                  | nats.errors.StaleConnectionError | nats.errors.OutboundBufferLimitError
                  | nats.errors.NoServersError | ConnectionError | OSError):
        return StoreUnavailableError(f"{what}: NATS connection unavailable ({type(exc).__name__})")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return StoreError(f"{what}: message exceeds the server's max payload")
    text = str(exc)
    if "permissions violation" in text.lower():
        return PermissionDeniedError(f"{what}: {text}")
    return StoreError(f"{what}: {type(exc).__name__}: {text}")


_log = logging.getLogger("aether.nats")
_PERMISSION_PREFIX = "permissions violation for "
_unattached_logged: list[bool] = []  # the "not connected through aether.connect" note is logged once
_SWEEP_INTERVAL = 0.05


class DenialListener(Protocol):
    """Told of each permission violation the server reports on a connection (see
    :func:`watch_permission_denials`). ``kind`` is ``"publish"`` or ``"subscription"``; the
    server's text (and so ``subject``) arrives lower-cased from nats-py."""

    def _denied(self, kind: str, subject: str, text: str) -> None: ...


def watch_permission_denials(nc: Client, listener: DenialListener) -> None:
    """Call ``listener._denied(kind, subject, text)`` for each permission violation on ``nc``
    (the listener is held weakly; the client's own error callback still runs).

    The violations reach Aether through the error callback that :func:`aether.connect.connect`
    composes at connect time (:func:`compose_error_callback`). nats-py offers no public way to
    add an error callback to a client connected by other means, so on such a client nothing is
    reported: a refused request then fails with :class:`~aether.errors.AetherTimeoutError` after
    its timeout instead of :class:`PermissionDeniedError` at once, and a refused bus subscription
    is not noticed. Connect with :func:`aether.connect.connect` to keep the immediate errors.
    """
    _PermissionWatch.of(nc).apis.add(listener)


class _DenialGuard:
    __slots__ = ("__weakref__", "future", "match")

    def __init__(self, match: Callable[[str], bool]) -> None:
        self.match = match
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _denied(self, kind: str, subject: str, text: str) -> None:
        if not self.future.done() and self.match(subject.lower()):
            self.future.set_exception(PermissionDeniedError(f"the NATS server refused: {text}"))


async def refused_or(nc: Client, call: Awaitable[T], match: Callable[[str], bool]) -> T:
    """Await ``call`` (a nats-py request, which would only time out on a refusal), but raise
    :class:`PermissionDeniedError` at once if meanwhile the server reports a permission violation
    on a subject for which ``match(lower-cased subject)`` is true."""
    guard = _DenialGuard(match)
    watch = _PermissionWatch.of(nc)
    watch.apis.add(guard)
    task = asyncio.ensure_future(call)
    try:
        waiting: set[asyncio.Future[Any]] = {task, guard.future}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task})  # its own CancelledError stays in it; ours propagates
        if not task.cancelled():
            task.exception()  # retrieved
        raise cast(BaseException, guard.future.exception())
    finally:
        watch.apis.discard(guard)
        if not task.done():  # we were cancelled
            task.cancel()
        if guard.future.done():
            guard.future.exception()  # retrieved: no "exception never retrieved" log
        else:
            guard.future.cancel()


class _PermissionWatch:
    """Turns the server's asynchronous permission violations on one client into immediate
    :class:`PermissionDeniedError` for the Aether requests they concern.

    Fed by the error callback :func:`compose_error_callback` builds at connect time; never
    installed by replacing a nats-py private attribute.
    """

    __slots__ = ("apis", "attached")

    _by_client: ClassVar[weakref.WeakKeyDictionary[Client, _PermissionWatch]] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self.apis: weakref.WeakSet[DenialListener] = weakref.WeakSet()
        self.attached = False

    @classmethod
    def of(cls, nc: Client) -> _PermissionWatch:
        """The watch of ``nc`` (created, unattached, if ``nc`` was not connected through Aether)."""
        watch = cls._by_client.get(nc)
        if watch is None:
            watch = cls._by_client[nc] = cls()
        if not watch.attached and not _unattached_logged:
            _unattached_logged.append(True)
            _log.info("a NATS client not connected with aether.connect: permission violations are not "
                      "reported at once (refused requests time out instead)")
        return watch

    def dispatch(self, err: Exception) -> None:
        text = str(err)
        lowered = text.lower()
        at = lowered.find(_PERMISSION_PREFIX)
        if at < 0:
            return
        rest = text[at + len(_PERMISSION_PREFIX):]
        kind, _, subject = rest.partition(" to ")
        subject = subject.strip().strip('"')
        for api in list(self.apis):
            api._denied(kind.strip().lower(), subject, text)


ErrorCallback = Callable[[Exception], Awaitable[None]]


def compose_error_callback(nc: Client, user_cb: ErrorCallback) -> ErrorCallback:
    """The error callback to give nats-py when connecting ``nc``: Aether's permission watch
    first (:func:`watch_permission_denials`), then ``user_cb``. Used by :func:`aether.connect.connect`."""
    watch = _PermissionWatch._by_client.get(nc)
    if watch is None:
        watch = _PermissionWatch._by_client[nc] = _PermissionWatch()
    watch.attached = True

    async def on_error(err: Exception) -> None:
        watch.dispatch(err)
        await user_cb(err)

    return on_error


def inbox_root(nc: Client) -> str:
    """The client's reply-subject prefix (``_INBOX`` unless connected with ``inbox_prefix=``),
    derived from the public ``new_inbox()`` (``<prefix>.<unique token>``)."""
    return nc.new_inbox().rpartition(".")[0]


class _Collector:
    """Gathers the replies of a multi-message request until an end-of-batch status."""

    __slots__ = ("done", "msgs")

    def __init__(self) -> None:
        self.msgs: list[Msg] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class JsApi:
    """Request/reply over one multiplexed inbox subscription, with translated errors.

    Args:
        nc: a connected nats-py client (not owned: it is never closed here).
        api_prefix: the JetStream API prefix (``$JS.API``; differs with domains).
        timeout: default seconds to wait for a reply.
    """

    def __init__(self, nc: Client, *, api_prefix: str = "$JS.API", timeout: float = 5.0) -> None:
        self.nc = nc
        self.api_prefix = api_prefix
        self.timeout = timeout
        self._prefix = ""
        self._prefix_len = 0
        self._sub: Any = None
        self._waiting: dict[str, asyncio.Future[Msg] | _Collector] = {}
        self._subjects: dict[str, str] = {}
        self._refused: str | None = None
        self._deadlines: dict[str, tuple[float, str]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._counter = 0
        self._detached: set[str] = set()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Subscribe the reply inbox now (otherwise done by the first request).

        Raises:
            StoreUnavailableError / StoreError / PermissionDeniedError: the subscription failed.
        """
        await self._ensure_sub()

    async def _ensure_sub(self) -> None:
        if self._sub is not None:
            return
        async with self._lock:
            if self._sub is not None:
                return
            prefix = f"{inbox_root(self.nc)}.{secrets.token_hex(8)}."
            _PermissionWatch.of(self.nc).apis.add(self)
            try:
                # replies answer our own requests (a history page can be ~64 MiB, and the next
                # page is prefetched): never let nats-py drop one as a "slow consumer"
                self._sub = await self.nc.subscribe(prefix + "*", cb=self._on_reply, pending_bytes_limit=0)
            except Exception as exc:
                raise translate_nats_error(exc, "subscribing to the reply inbox") from exc
            self._prefix = prefix
            self._prefix_len = len(prefix)

    async def _on_reply(self, msg: Msg) -> None:
        waiter = self._waiting.get(msg.subject[self._prefix_len :])
        if waiter is None:
            return
        if isinstance(waiter, _Collector):
            headers = msg.headers
            if headers and "Status" in headers:
                if not waiter.done.done():
                    waiter.done.set_result(None)
                waiter.msgs.append(msg)  # the status message closes the batch; callers inspect it
                return
            waiter.msgs.append(msg)
        elif not waiter.done():
            waiter.set_result(msg)

    def _denied(self, kind: str, subject: str, text: str) -> None:
        """Fail the pending requests a permission violation concerns (called by _PermissionWatch)."""
        # nats-py lower-cases the server's message, so subjects are compared case-insensitively
        subject = subject.lower()
        if kind.startswith("subscription") and subject.startswith(self._prefix[:-1].lower()):
            self._refused = text
            targets = list(self._waiting)
        else:
            targets = [t for t, s in self._subjects.items() if s.lower() == subject]
        for token in targets:
            waiter = self._waiting.get(token)
            error = PermissionDeniedError(f"the NATS server refused: {text}")
            if isinstance(waiter, _Collector):
                if not waiter.done.done():
                    waiter.done.set_exception(error)
            elif waiter is not None and not waiter.done():
                waiter.set_exception(error)

    def _arm(self, token: str, timeout: float | None, what: str) -> None:
        """Give a request its deadline; one sweeper task per JsApi fails expired requests.

        Cheaper than an ``asyncio.timeout`` per request (a timer-heap entry each); timeouts fire at
        most ``_SWEEP_INTERVAL`` late.
        """
        loop = asyncio.get_running_loop()
        self._deadlines[token] = (loop.time() + (self.timeout if timeout is None else timeout), what)
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Fail the requests that are past their deadline; ends when nothing is in flight."""
        loop = asyncio.get_running_loop()
        deadlines, waiting = self._deadlines, self._waiting
        try:
            while deadlines:
                await asyncio.sleep(_SWEEP_INTERVAL)
                now = loop.time()
                for token in [t for t, (deadline, _) in deadlines.items() if deadline <= now]:
                    _, what = deadlines.pop(token)
                    waiter = waiting.get(token)
                    future = waiter.done if isinstance(waiter, _Collector) else waiter
                    if future is not None and not future.done():
                        future.set_exception(AetherTimeoutError(f"{what}: no reply from NATS in time"))
        finally:
            self._sweeper = None

    def check_connected(self, what: str) -> None:
        """Raise StoreUnavailableError at once when the connection is not up."""
        nc = self.nc
        if not nc.is_connected:
            state = "closed" if nc.is_closed else "reconnecting" if nc.is_reconnecting else "not connected"
            raise StoreUnavailableError(f"{what}: NATS connection is {state}")

    async def request(self, subject: str, payload: bytes, *, headers: dict[str, str] | None = None,
                      timeout: float | None = None, what: str = "request") -> Msg:
        """Send a request and return the reply message.

        Raises:
            StoreUnavailableError: not connected.
            AetherTimeoutError: no reply within ``timeout``.
            StoreError: no responders.
        """
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        await self._exchange(subject, payload, headers, timeout, what, future, future)
        msg = future.result()
        hdrs = msg.headers
        if hdrs and hdrs.get("Status") == "503":
            raise StoreError(f"{what}: no responders on {subject!r} (JetStream disabled or stream missing)")
        return msg

    async def request_many(self, subject: str, payload: bytes, *, timeout: float | None = None,
                           what: str = "request") -> list[Msg]:
        """Send a request whose reply is several messages ended by a status message.

        Returns every message, the final status message included.

        Raises:
            as :meth:`request`.
        """
        collector = _Collector()
        await self._exchange(subject, payload, None, timeout, what, collector, collector.done)
        return collector.msgs

    async def send(self, subject: str, payload: bytes, *, headers: dict[str, str] | None = None,
                   what: str = "request") -> tuple[str, asyncio.Future[Msg]]:
        """Publish a request and return at once its token and the future of its (first) reply.

        For callers that wait on the reply alongside other events and may abandon it: they own
        the deadline and must call :meth:`forget` with the token when done. The future fails
        with :class:`PermissionDeniedError` if the server refuses the request's subject, and is
        cancelled by :meth:`aclose`.

        Raises:
            PermissionDeniedError: the server refused the reply subscription.
            StoreUnavailableError / StoreError: the publish failed.
        """
        if self._sub is None:
            await self._ensure_sub()
        if self._refused is not None:
            raise PermissionDeniedError(f"{what}: the NATS server refused the reply subscription: {self._refused}")
        self._counter += 1
        token = f"{self._counter:x}"
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        self._subjects[token] = subject
        self._detached.add(token)
        try:
            await self.nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except Exception as exc:
            self.forget(token)
            raise translate_nats_error(exc, what) from exc
        return token, future

    def forget(self, token: str) -> None:
        """Stop waiting for the reply of a request made with :meth:`send`."""
        waiter = self._waiting.pop(token, None)
        self._subjects.pop(token, None)
        self._detached.discard(token)
        if isinstance(waiter, asyncio.Future) and waiter.done() and not waiter.cancelled():
            waiter.exception()  # retrieved: no "exception was never retrieved" log

    async def _exchange(self, subject: str, payload: bytes, headers: dict[str, str] | None, timeout: float | None,
                        what: str, waiter: asyncio.Future[Msg] | _Collector, done: asyncio.Future[Any]) -> None:
        """Publish with this inbox's reply token for ``waiter`` and wait until ``done`` (or the deadline)."""
        if self._sub is None:
            await self._ensure_sub()
        self.check_connected(what)
        if self._refused is not None:
            raise PermissionDeniedError(f"{what}: the NATS server refused the reply subscription: {self._refused}")
        self._counter += 1
        token = f"{self._counter:x}"
        self._waiting[token] = waiter
        self._subjects[token] = subject
        try:
            self._arm(token, timeout, what)
            await self.nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            await done
        except (asyncio.CancelledError, AetherError):
            raise
        except Exception as exc:
            raise translate_nats_error(exc, what) from exc
        finally:
            del self._waiting[token]
            del self._subjects[token]
            self._deadlines.pop(token, None)

    async def publish_acked(self, subject: str, payload: bytes, headers: dict[str, str], *,
                            timeout: float | None = None, what: str = "publish") -> PubAck:
        """Publish to a stream and return the decoded PubAck (``error`` may be set)."""
        msg = await self.request(subject, payload, headers=headers, timeout=timeout, what=what)
        try:
            return _decode_ack(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StoreError(f"{what}: malformed publish ack {msg.data[:120]!r}") from exc

    async def publish_nowait(self, subject: str, payload: bytes, headers: dict[str, str],
                             what: str = "publish") -> None:
        """Publish without a reply (used inside atomic batches)."""
        try:
            await self.nc.publish(subject, payload, headers=headers)
        except Exception as exc:
            raise translate_nats_error(exc, what) from exc

    async def api(self, call: str, body: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Call ``$JS.API.<call>`` with a JSON body and return the decoded JSON reply.

        Raises:
            JetStreamApiError: the API replied with an error (code and description kept).
        """
        payload = _encode_json(body) if body is not None else b""
        msg = await self.request(f"{self.api_prefix}.{call}", payload, timeout=timeout, what=f"JetStream {call}")
        try:
            reply = _decode_any(msg.data)
        except msgspec.DecodeError as exc:
            raise StoreError(f"JetStream {call}: malformed reply") from exc
        err = reply.get("error") if isinstance(reply, dict) else None
        if err:
            raise JetStreamApiError(call, int(err.get("code", 0)), int(err.get("err_code", 0)),
                                    str(err.get("description", "")))
        return reply

    async def aclose(self) -> None:
        """Unsubscribe the reply inbox and cancel the futures of :meth:`send` (the connection
        itself is left open)."""
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
        for token in list(self._detached):
            waiter = self._waiting.get(token)
            if isinstance(waiter, asyncio.Future):
                waiter.cancel()
        sub, self._sub = self._sub, None
        if sub is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def api_error(err: ApiError, what: str) -> AetherError:
    """Translate a PubAck error into an AetherError."""
    text = err.description
    if "permission" in text.lower():
        return PermissionDeniedError(f"{what}: {text}")
    return JetStreamApiError(what, err.code, err.err_code, text)

