"""``aether dashboard``: serve a live web page of a cluster (extra ``dashboard``)."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

import click

from aether.cli._common import connection_options, fail, run
from aether.cli._store import connected
from aether.connect import ConnectOptions

__all__ = ["dashboard", "dashboard_url"]


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
        click.UsageError: the address cannot be bound.
    """
    sock: socket.socket | None = None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise click.UsageError(f"cannot listen on {host}:{port}: {exc}") from None
    return sock


@click.command()
@click.option("--cluster", "-c", "cluster_name", envvar="AETHER_CLUSTER", show_envvar=True, default="default",
              show_default=True, help="Cluster name.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve the page on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8090, show_default=True,
              help="Port to serve the page on (0: a free one).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between reads of the cluster (a change is shown at once).")
@click.option("--checkpoint-bucket", default="aether-projections", show_default=True,
              help="KV bucket of the projections' checkpoints.")
@click.option("--no-scrape", is_flag=True, help="Do not read the members' /metrics endpoints (append rates).")
@connection_options
def dashboard(cluster_name: str, host: str, port: int, interval: float, checkpoint_bucket: str, no_scrape: bool,
              connect: ConnectOptions) -> None:
    """Serve a live web page of a cluster: members, leader, shard map, rates, streams, projections.

    The page is at http://HOST:PORT/, the same state as JSON at /api/state. The dashboard
    only reads: it joins nothing and changes nothing.
    """
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        fail("the dashboard needs starlette and uvicorn: pip install 'aether-nats[dashboard]'")
    from aether.cluster._kv import validate_cluster_name

    validate_cluster_name(cluster_name)
    sock = bind(host, port)
    try:
        run(_serve(cluster_name, sock, interval, checkpoint_bucket, not no_scrape, connect))
    finally:
        sock.close()


async def _serve(cluster_name: str, sock: socket.socket, interval: float, checkpoint_bucket: str, scrape: bool,
                 connect: ConnectOptions) -> None:
    from aether.dashboard import Collector, create_app
    from aether.dashboard.app import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with connected(connect) as nc:
        collector = Collector(nc, cluster_name, interval=interval, checkpoint_bucket=checkpoint_bucket,
                              scrape_metrics=scrape)
        try:
            await collector.start()
            address = sock.getsockname()
            click.echo(f"aether dashboard of cluster {cluster_name}: {dashboard_url(address[0], address[1])}")
            sys.stdout.flush()
            await serve(create_app(collector), sock, stop=stop)
        finally:
            await collector.aclose()
