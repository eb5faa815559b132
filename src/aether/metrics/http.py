"""Serve ``/metrics`` over HTTP for Prometheus to scrape."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aether.errors import InvalidInputError

from ._prometheus import prometheus, resolve_registry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["MetricsServer", "start_metrics_server"]


class MetricsServer:
    """A running ``/metrics`` HTTP server (a daemon thread). Stop it with :meth:`close`.

    Attributes:
        host: the address it listens on.
        port: the port it listens on (the real one when 0 was asked for).
    """

    def __init__(self, httpd: Any, thread: threading.Thread, host: str) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host = host
        self.port: int = int(httpd.server_port)
        self._closed = False

    @property
    def url(self) -> str:
        """``http://<host>:<port>/metrics`` (``127.0.0.1`` when listening on every address)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else "[::1]" if self.host == "::" else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving (blocks up to about half a second). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> MetricsServer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


def start_metrics_server(port: int = 0, registry: CollectorRegistry | None = None, *,
                         host: str = "0.0.0.0") -> MetricsServer:
    """Serve the registry's metrics at ``http://host:port/metrics`` from a daemon thread.

    Args:
        port: TCP port; 0 picks a free one (read it from :attr:`MetricsServer.port`).
        registry: the registry to expose (default: the global ``prometheus_client.REGISTRY``).
        host: the address to listen on (default: every address, as Prometheus expects;
            use ``"127.0.0.1"`` to keep it local).

    Raises:
        MetricsUnavailableError: ``prometheus-client`` is not installed.
        InvalidInputError: the port is invalid or cannot be bound (e.g. already in use).
    """
    prom = prometheus()
    if type(port) is not int or not 0 <= port <= 65535:
        raise InvalidInputError(f"port must be an int in 0..65535, got {port!r}")
    try:
        httpd, thread = prom.start_http_server(port, addr=host, registry=resolve_registry(registry))
    except OSError as exc:
        raise InvalidInputError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    return MetricsServer(httpd, thread, host)
