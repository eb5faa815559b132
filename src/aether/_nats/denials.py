"""The server's asynchronous permission refusals, turned into immediate PermissionDeniedError.

nats-py reports a refused publish or subscription only through the connection's error callback
(the request itself would just time out). :func:`compose_error_callback` builds that callback at
connect time (:func:`aether.connect.connect`); components register a listener per connection
with :func:`watch_permission_denials`. Never installed by replacing a nats-py private attribute.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, cast

from aether.errors import PermissionDeniedError

from .errors import parse_permission_denial

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["DenialListener", "ErrorCallback", "compose_error_callback", "refused_or", "watch_permission_denials"]

T = TypeVar("T")
_log = logging.getLogger("aether.nats")
_unattached_logged: list[bool] = []  # the "not connected through aether.connect" note is logged once


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
    PermissionWatch.of(nc).apis.add(listener)


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
    watch = PermissionWatch.of(nc)
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


class PermissionWatch:
    """The listeners of one client's permission violations (fed by the composed error callback)."""

    __slots__ = ("apis", "attached")

    _by_client: ClassVar[weakref.WeakKeyDictionary[Client, PermissionWatch]] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self.apis: weakref.WeakSet[DenialListener] = weakref.WeakSet()
        self.attached = False

    @classmethod
    def of(cls, nc: Client) -> PermissionWatch:
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
        denial = parse_permission_denial(text)
        if denial is None:
            return
        kind, subject = denial
        for api in list(self.apis):
            api._denied(kind, subject, text)


ErrorCallback = Callable[[Exception], Awaitable[None]]


def compose_error_callback(nc: Client, user_cb: ErrorCallback) -> ErrorCallback:
    """The error callback to give nats-py when connecting ``nc``: Aether's permission watch
    first (:func:`watch_permission_denials`), then ``user_cb``. Used by :func:`aether.connect.connect`."""
    watch = PermissionWatch._by_client.get(nc)
    if watch is None:
        watch = PermissionWatch._by_client[nc] = PermissionWatch()
    watch.attached = True

    async def on_error(err: Exception) -> None:
        watch.dispatch(err)
        await user_cb(err)

    return on_error
