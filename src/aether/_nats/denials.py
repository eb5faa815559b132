"""The server's asynchronous permission refusals, turned into immediate PermissionDeniedError.

nats-py reports a refused publish or subscription only through the connection's error callback
(the request itself would just time out). :func:`compose_error_callback` builds that callback at
connect time (:func:`aether.connect.connect`); components register a listener per connection
with :func:`watch_permission_denials`. Never installed by replacing a nats-py private attribute.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ClassVar, Protocol

from .errors import parse_permission_denial

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["DenialListener", "ErrorCallback", "compose_error_callback", "watch_permission_denials"]

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
