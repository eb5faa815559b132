"""One multiplexed request/reply inbox per connection.

Every Aether component on a connection (the stores and their history reader, the bus, the
cluster, projections) sends its requests with a reply subject under ONE wildcard subscription
``<inbox prefix>.<random>.>`` of that connection, as nats-py's own ``request`` does, but with:

* single replies (:meth:`Inbox.exchange` with a future; :meth:`Inbox.send` for a caller that
  owns the wait), multi-message replies ended by a status message (:class:`Collector`), and
  pipelined bursts whose replies are addressed ``<token>.<i>`` (:meth:`Inbox.fetch_each`);
* deadlines kept by one sweeper task per inbox (cheaper than a timer per request);
* probes through the connection and back (:meth:`Inbox.probe`);
* permission refusals of a request's subject, of a probe or of the inbox subscription itself
  failing the requests they concern at once (see :mod:`aether._nats.denials`).

The subscription is made on first use and released when the last holder (:meth:`Inbox.hold`,
:meth:`Inbox.release`) lets go; the connection is never closed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from aether.errors import AetherError, AetherTimeoutError, PermissionDeniedError, StoreError

from .denials import PermissionWatch
from .errors import STORE_ERRORS, ErrorClasses, translate_nats_error
from .headers import install_header_parser

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["Collector", "Inbox", "inbox_root"]

_SWEEP_INTERVAL = 0.05
_MAX_WINDOW = 256  # requests of a burst in flight at most ...
_WINDOW_BYTES = 8 * 1024 * 1024  # ... and the bytes their replies may bring at once


def inbox_root(nc: Client) -> str:
    """The client's reply-subject prefix (``_INBOX`` unless connected with ``inbox_prefix=``),
    derived from the public ``new_inbox()`` (``<prefix>.<unique token>``)."""
    return nc.new_inbox().rpartition(".")[0]


class Collector:
    """Gathers the replies of a multi-message request until an end-of-batch status."""

    __slots__ = ("done", "msgs")

    def __init__(self) -> None:
        self.msgs: list[Msg] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Burst:
    """The replies of a pipelined burst of requests, one per request, addressed ``<token>.<i>``.

    A reply with status 404 (no message) counts as ``None``; any other status fails the burst.
    The window of requests in flight shrinks as the replies grow.
    """

    __slots__ = ("done", "expected", "got", "largest", "msgs", "room", "window")

    def __init__(self, n: int) -> None:
        self.msgs: list[Msg | None] = [None] * n
        self.got = 0
        self.expected = n
        self.largest = 0
        self.window = 64
        self.room = asyncio.Event()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, msg: Msg, index: str) -> None:
        if self.done.done():
            return
        headers = msg.headers
        if headers is not None and "Status" in headers:
            status = headers["Status"]
            if status != "404":
                self.fail(StoreError(f"direct get failed: {status} {headers.get('Description', '')}"))
                return
        else:
            size = len(msg.data)
            self.msgs[int(index)] = msg
            if size > self.largest:
                self.largest = size
                self.window = max(4, min(_MAX_WINDOW, _WINDOW_BYTES // max(size, 1)))
        self.got += 1
        self.room.set()
        if self.got == self.expected:
            self.done.set_result(None)

    def fail(self, error: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(error)
        self.room.set()


_Waiter = asyncio.Future[Any] | Collector | _Burst


def _future_of(waiter: _Waiter) -> asyncio.Future[Any]:
    return waiter if isinstance(waiter, asyncio.Future) else waiter.done


class Inbox:
    """The reply inbox of one connection: get it with :meth:`Inbox.of` (one per client)."""

    # weak both ways: an inbox holds its client, so a strong value would keep every client alive
    _by_client: ClassVar[weakref.WeakKeyDictionary[Client, weakref.ref[Inbox]]] = weakref.WeakKeyDictionary()

    __slots__ = ("__weakref__", "_counter", "_deadlines", "_lock", "_meta", "_prefix_len", "_refused",
                 "_self_refused", "_sub", "_sweeper", "_users", "_waiting", "nc", "prefix")

    @classmethod
    def of(cls, nc: Client) -> Inbox:
        """The inbox of ``nc`` (created on first use; its subscription only when a request needs it).

        It lives as long as a component holds it or its subscription is open.
        """
        ref = cls._by_client.get(nc)
        inbox = ref() if ref is not None else None
        if inbox is None:
            inbox = cls(nc)
            cls._by_client[nc] = weakref.ref(inbox)
        return inbox

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        install_header_parser(nc)  # every component's connection has an inbox: parse its headers fast
        self.prefix = ""  # "<inbox root>.<random>." once subscribed
        self._prefix_len = 0
        self._sub: Any = None
        self._users = 0
        self._lock = asyncio.Lock()
        self._waiting: dict[str, _Waiter] = {}
        self._meta: dict[str, tuple[str, str]] = {}  # token -> (request subject, what it is for)
        self._deadlines: dict[str, float] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._counter = 0
        self._refused: str | None = None  # the server refused the inbox subscription (its text)
        self._self_refused: str | None = None  # the server refused publishes to the inbox (probes)

    @property
    def in_flight(self) -> int:
        """Requests waiting for their replies now."""
        return len(self._waiting)

    # ---- holders and the subscription -------------------------------------------------------
    def hold(self) -> None:
        """Count one more component using the inbox (each calls :meth:`release` once when closing)."""
        self._users += 1

    async def release(self) -> None:
        """One holder is done; the last one unsubscribes the inbox when no request is in flight."""
        self._users = max(self._users - 1, 0)
        if self._users or self._waiting:
            return
        sub, self._sub = self._sub, None
        self.prefix, self._prefix_len = "", 0
        if sub is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):  # the connection went away: nothing left to release
                await sub.unsubscribe()

    async def ensure(self, classes: ErrorClasses = STORE_ERRORS) -> None:
        """Subscribe the inbox now if it is not yet.

        Raises:
            ``classes.unavailable`` / ``classes.failed`` / PermissionDeniedError: the subscription failed.
        """
        if self._sub is not None:
            return
        async with self._lock:
            if self._sub is not None:
                return
            prefix = f"{inbox_root(self.nc)}.{secrets.token_hex(8)}."
            PermissionWatch.of(self.nc).apis.add(self)
            self.prefix = prefix  # set first: a refusal is matched against it
            self._prefix_len = len(prefix)
            self._refused = self._self_refused = None
            try:
                # replies answer our own requests (a history page can be ~64 MiB, and the next
                # page is prefetched): never let nats-py drop one as a "slow consumer"
                self._sub = await self.nc.subscribe(prefix + ">", cb=self._on_reply, pending_bytes_limit=0)
            except Exception as exc:
                self.prefix, self._prefix_len = "", 0
                raise translate_nats_error(exc, "subscribing to the reply inbox", classes) from exc

    async def _on_reply(self, msg: Msg) -> None:
        token, dot, index = msg.subject[self._prefix_len:].partition(".")
        waiter = self._waiting.get(token)
        if waiter is None:
            return
        if dot:
            if type(waiter) is _Burst:
                waiter.add(msg, index)
        elif type(waiter) is Collector:
            headers = msg.headers
            if headers and "Status" in headers and not waiter.done.done():
                waiter.done.set_result(None)
            waiter.msgs.append(msg)  # the status message closes the batch; callers inspect it
        elif isinstance(waiter, asyncio.Future) and not waiter.done():
            waiter.set_result(msg)

    def _denied(self, kind: str, subject: str, text: str) -> None:
        """Fail the requests a permission violation concerns (called by the connection's PermissionWatch)."""
        own = self.prefix.lower()
        if not own:
            return
        # nats-py lower-cases the server's message, so subjects are compared case-insensitively
        subject = subject.lower()
        if kind.startswith("subscription"):
            if not subject.startswith(own[:-1]):
                return
            self._refused = text
            targets = list(self._waiting)
        elif subject.startswith(own):  # a probe's publish to the inbox itself
            self._self_refused = text
            targets = [subject[len(own):]]
        else:
            targets = [t for t, (s, _) in self._meta.items() if s.lower() == subject]
        for token in targets:
            waiter = self._waiting.get(token)
            if waiter is None:
                continue
            _, what = self._meta.get(token, ("", "request"))
            error = PermissionDeniedError(f"{what}: the NATS server refused: {text}")
            if type(waiter) is _Burst:
                waiter.fail(error)
            else:
                future = _future_of(waiter)
                if not future.done():
                    future.set_exception(error)

    def _check_refused(self, what: str) -> None:
        if self._refused is not None:
            raise PermissionDeniedError(f"{what}: the NATS server refused the reply subscription: {self._refused}")

    # ---- tokens and deadlines -----------------------------------------------------------------
    def _open(self, subject: str, waiter: _Waiter, what: str) -> str:
        self._counter += 1
        token = f"{self._counter:x}"
        self._waiting[token] = waiter
        self._meta[token] = (subject, what)
        return token

    def _close(self, token: str) -> None:
        self._waiting.pop(token, None)
        self._meta.pop(token, None)
        self._deadlines.pop(token, None)

    def _arm(self, token: str, timeout: float) -> None:
        """Give a request its deadline; the inbox's one sweeper task fails expired requests (at
        most ``_SWEEP_INTERVAL`` late)."""
        loop = asyncio.get_running_loop()
        self._deadlines[token] = loop.time() + timeout
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Fail the requests that are past their deadline; ends when nothing is in flight."""
        loop = asyncio.get_running_loop()
        deadlines, waiting, meta = self._deadlines, self._waiting, self._meta
        try:
            while deadlines:
                await asyncio.sleep(_SWEEP_INTERVAL)
                now = loop.time()
                for token in [t for t, deadline in deadlines.items() if deadline <= now]:
                    del deadlines[token]
                    waiter = waiting.get(token)
                    if waiter is None:
                        continue
                    future = _future_of(waiter)
                    if not future.done():
                        _, what = meta.get(token, ("", "request"))
                        future.set_exception(AetherTimeoutError(f"{what}: no reply from NATS in time"))
        finally:
            self._sweeper = None

    # ---- requests -----------------------------------------------------------------------------
    async def exchange(self, subject: str, payload: bytes, headers: dict[str, str] | None, timeout: float,
                       what: str, waiter: asyncio.Future[Msg] | Collector,
                       classes: ErrorClasses = STORE_ERRORS) -> None:
        """Publish a request with a reply subject of this inbox for ``waiter`` and wait until it is
        done (a reply, the end-of-batch status) or ``timeout`` seconds have passed.

        Raises:
            AetherTimeoutError: no (complete) reply in time.
            PermissionDeniedError: the server refused the request's subject or the inbox.
            ``classes.unavailable`` / ``classes.failed``: the publish failed.
        """
        if self._sub is None:
            await self.ensure(classes)
        if self._refused is not None:
            self._check_refused(what)
        token = self._open(subject, waiter, what)
        try:
            self._arm(token, timeout)
            await self.nc.publish(subject, payload, reply=self.prefix + token, headers=headers)
            await _future_of(waiter)
        except (asyncio.CancelledError, AetherError):
            raise
        except Exception as exc:
            raise translate_nats_error(exc, what, classes) from exc
        finally:
            self._close(token)

    async def send(self, subject: str, payload: bytes, *, headers: dict[str, str] | None = None,
                   what: str = "request", classes: ErrorClasses = STORE_ERRORS) -> tuple[str, asyncio.Future[Msg]]:
        """Publish a request and return at once its token and the future of its (first) reply; the
        caller owns the deadline and calls :meth:`forget` with the token when done.

        Raises:
            PermissionDeniedError: the server refused the reply subscription.
            ``classes.unavailable`` / ``classes.failed``: the publish failed.
        """
        if self._sub is None:
            await self.ensure(classes)
        self._check_refused(what)
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        token = self._open(subject, future, what)
        try:
            await self.nc.publish(subject, payload, reply=self.prefix + token, headers=headers)
        except Exception as exc:
            self.forget(token)
            raise translate_nats_error(exc, what, classes) from exc
        return token, future

    def forget(self, token: str) -> None:
        """Stop waiting for the reply of a request made with :meth:`send`."""
        waiter = self._waiting.get(token)
        self._close(token)
        if isinstance(waiter, asyncio.Future) and waiter.done() and not waiter.cancelled():
            waiter.exception()  # retrieved: no "exception was never retrieved" log

    async def probe(self, timeout: float, what: str, classes: ErrorClasses = STORE_ERRORS) -> None:
        """Send an empty message to this inbox through the connection and wait for it to come back.

        When it is back, the server has processed every command queued on the connection before it
        (subscriptions, publishes) and has sent the client everything it had for it before the
        probe (nats-py's ``flush()`` cannot promise the first: its PING is written ahead of
        commands still waiting in the client's outgoing queue).

        Raises:
            AetherTimeoutError: not back within ``timeout`` seconds.
            PermissionDeniedError: the server refused the inbox subscription or the probe's publish.
            ``classes.unavailable`` / ``classes.failed``: the publish failed.
        """
        if self._sub is None:
            await self.ensure(classes)
        self._check_refused(what)
        if self._self_refused is not None:
            raise PermissionDeniedError(f"{what}: the NATS server refused: {self._self_refused}")
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        token = self._open(self.prefix, future, what)
        try:
            await self.nc.publish(self.prefix + token, b"")
            async with asyncio.timeout(timeout):
                await future
        except (asyncio.CancelledError, AetherError):
            raise
        except TimeoutError:
            raise AetherTimeoutError(f"{what}: no reply from NATS in time") from None
        except Exception as exc:
            raise translate_nats_error(exc, what, classes) from exc
        finally:
            self._close(token)

    async def fetch_each(self, subject: str, bodies: Sequence[bytes], *, timeout: float,
                         what: str) -> list[Msg | None]:
        """Send one request per body to ``subject``, pipelined (a window of them in flight, fewer
        when the replies are large), and return the replies in order: ``None`` where the reply was
        a 404 status (JetStream direct get: no message).

        Raises:
            AetherTimeoutError: not every reply arrived within ``timeout`` seconds.
            StoreError: a reply with another status.
            PermissionDeniedError / StoreUnavailableError / StoreError: a refused or failed request.
        """
        if not bodies:
            return []
        if self._sub is None:
            await self.ensure()
        self._check_refused(what)
        batch = _Burst(len(bodies))
        token = self._open(subject, batch, what)
        reply = f"{self.prefix}{token}."
        publish = self.nc.publish
        try:
            try:
                async with asyncio.timeout(timeout):
                    for i, body in enumerate(bodies):
                        while i - batch.got >= batch.window and not batch.done.done():
                            batch.room.clear()
                            await batch.room.wait()
                        if batch.done.done():
                            break
                        await publish(subject, body, reply=f"{reply}{i}")
                    await batch.done
            except (asyncio.CancelledError, AetherError):
                raise
            except TimeoutError:
                raise AetherTimeoutError(f"{what}: no reply from NATS in time") from None
            except Exception as exc:
                raise translate_nats_error(exc, what) from exc
            batch.done.result()
            return batch.msgs
        finally:
            self._close(token)
            if not batch.done.done():
                batch.done.cancel()
            elif not batch.done.cancelled():
                batch.done.exception()  # retrieved
