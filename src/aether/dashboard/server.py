"""Serving the dashboard: a :class:`Collector` and the web app on a bound socket, in this event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aether.dashboard.collector import Collector
from aether.errors import InvalidInputError

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["DashboardServer", "bind", "dashboard_url"]


def dashboard_url(host: str, port: int) -> str:
    """The URL a browser on this machine opens for a dashboard listening on ``host:port``."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one).

    Raises:
        InvalidInputError: the address cannot be bound (in use, not local, bad port).
    """
    sock: socket.socket | None = None
    try:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidInputError(f"port must be an int in 0..65535, got {port!r}")
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise InvalidInputError(f"cannot listen on {host}:{port}: {exc}") from None
    return sock


class DashboardServer:
    """The dashboard of ``cluster``, served from this event loop until :meth:`aclose`.

    Args:
        nc: a connected nats-py client (not owned).
        cluster: the cluster name.
        host / port: where to listen (port 0: a free one).
        interval / checkpoint_bucket / scrape_metrics: as :class:`Collector`.

    Raises:
        InvalidNameError / InvalidInputError: bad cluster name or interval.
    """

    def __init__(self, nc: Client, cluster: str, *, host: str = "127.0.0.1", port: int = 0, interval: float = 1.0,
                 checkpoint_bucket: str = "aether-projections", scrape_metrics: bool = True) -> None:
        self.collector = Collector(nc, cluster, interval=interval, checkpoint_bucket=checkpoint_bucket,
                                   scrape_metrics=scrape_metrics)
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The page's URL (after :meth:`start`)."""
        if self._sock is None:
            raise RuntimeError("the dashboard is not started")
        address = self._sock.getsockname()
        return dashboard_url(address[0], address[1])

    async def start(self) -> str:
        """Listen, read the cluster once and serve; returns the URL.

        Raises:
            InvalidInputError: the address cannot be bound.
            ImportError: the ``dashboard`` extra (starlette, uvicorn) is not installed.
        """
        import uvicorn

        from aether.dashboard.app import create_app

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:  # the caller handles SIGINT/SIGTERM
                yield

        self._sock = bind(self.host, self.port)
        try:
            await self.collector.start()
            config = uvicorn.Config(create_app(self.collector), log_level="warning", lifespan="off",
                                    timeout_graceful_shutdown=1, access_log=False)
            self._server = _Server(config)
            self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[self._sock]),
                                                                name="aether-dashboard")
            # the socket listens already: connections queue until uvicorn accepts them
            await asyncio.sleep(0)
            if self._task.done():
                self._task.result()
        except BaseException:
            await self.aclose()
            raise
        return self.url

    async def wait(self) -> None:
        """Return when the web server stops."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def aclose(self) -> None:
        """Stop serving and reading."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
            self._task = None
        await self.collector.aclose()
        if self._sock is not None:
            self._sock.close()
