"""What long-running commands say about their NATS connection: one line when it is lost, a
reminder while it stays lost, one line when it is back (all on stderr)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from nats.aio.client import Client

    from aether.connect import ConnectCallbacks

__all__ = ["ConnectionStatus"]

REMINDER_ENV = "AETHER_RECONNECT_REMINDER"
"""Environment variable: seconds between the "still reconnecting" lines (default 30)."""


def _reminder_every() -> float:
    try:
        value = float(os.environ.get(REMINDER_ENV, "30"))
    except ValueError:
        return 30.0
    return value if value > 0 else 30.0


class ConnectionStatus:
    """Follows a nats-py client through its callbacks and reports on ``console``.

    Pass :meth:`callbacks` to :func:`aether.connect.connect`, set :attr:`nc` once connected and
    call :meth:`close` before closing the client (a deliberate close is not a lost connection).
    ``on_back`` coroutines run after each reconnection (e.g. to resubscribe).
    """

    def __init__(self, console: Console, what: str, *, reminder_every: float | None = None) -> None:
        self._console = console
        self._what = what
        self._reminder_every = reminder_every or _reminder_every()
        self._nc: Client | None = None
        self.on_back: list[Callable[[], Awaitable[None]]] = []
        self._lost_at: float | None = None
        self._reminder: asyncio.Task[None] | None = None
        self._closed = False
        self._last_url: str | None = None  # the server last connected to (named in the "lost" line)
        self.back = asyncio.Event()  # set after every reconnection (cleared by whoever waits on it)

    @property
    def nc(self) -> Client | None:
        """The client followed (set it once connected)."""
        return self._nc

    @nc.setter
    def nc(self, client: Client | None) -> None:
        self._nc = client
        self._url()  # remember the server connected to now, to name it once the connection is lost

    @property
    def lost(self) -> bool:
        """Whether the connection is lost right now (and the client is trying to get it back)."""
        return self._lost_at is not None

    def lost_for(self) -> float:
        """Seconds the connection has been lost (0 when connected)."""
        return 0.0 if self._lost_at is None else asyncio.get_running_loop().time() - self._lost_at

    def callbacks(self) -> ConnectCallbacks:
        """The ``disconnected_cb`` / ``reconnected_cb`` arguments for :func:`aether.connect.connect`."""
        return {"disconnected_cb": self._on_lost, "reconnected_cb": self._on_back}

    def _url(self) -> str:
        url = self.nc.connected_url if self.nc is not None else None
        if url is not None:
            self._last_url = url.geturl()
        return f" ({self._last_url})" if self._last_url is not None else ""

    def _say(self, text: str, style: str) -> None:
        self._console.print(f"aether: {text}", style=style, highlight=False, soft_wrap=True)

    async def _on_lost(self) -> None:
        if self._closed or self._lost_at is not None:
            return
        self._lost_at = asyncio.get_running_loop().time()
        self._say(f"{self._what}: connection to NATS lost{self._url()}; reconnecting until it is back "
                  "(Ctrl-C to stop)", "yellow")
        self._reminder = asyncio.get_running_loop().create_task(self._remind())

    async def _remind(self) -> None:
        while True:
            await asyncio.sleep(self._reminder_every)
            if self._closed or self._lost_at is None:
                return
            self._say(f"{self._what}: still reconnecting to NATS{self._url()}, connection lost "
                      f"{self.lost_for():.0f}s ago", "yellow")

    async def _on_back(self) -> None:
        if self._closed:
            return
        took = self.lost_for()
        self._lost_at = None
        self._stop_reminder()
        self._say(f"{self._what}: connection to NATS is back{self._url()} after {took:.1f}s", "green")
        for hook in self.on_back:
            await hook()
        self.back.set()

    def _stop_reminder(self) -> None:
        task, self._reminder = self._reminder, None
        if task is not None:
            task.cancel()

    def close(self) -> None:
        """Stop reporting (call before closing the client on purpose)."""
        self._closed = True
        self._stop_reminder()

