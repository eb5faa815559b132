"""``aether dashboard``: serve a live web page of a cluster (extra ``dashboard``)."""

from __future__ import annotations

import asyncio
import sys

import click
from rich.console import Console

from aether.cli._common import connection_options, fail, on_stop_signals, run
from aether.cli._status import ConnectionStatus
from aether.cli._store import connected
from aether.connect import ConnectOptions

__all__ = ["dashboard"]


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
    from aether.cluster.naming import validate_cluster_name
    from aether.dashboard.server import bind

    validate_cluster_name(cluster_name)
    bind(host, port).close()  # a clear usage error before connecting
    run(_serve(cluster_name, host, port, interval, checkpoint_bucket, not no_scrape, connect))


async def _serve(cluster_name: str, host: str, port: int, interval: float, checkpoint_bucket: str, scrape: bool,
                 connect: ConnectOptions) -> None:
    from aether.dashboard import DashboardServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    on_stop_signals(stop.set)  # Ctrl-C: stop, then exit 130; SIGTERM: stop, exit 0
    status = ConnectionStatus(Console(stderr=True), "dashboard")
    async with connected(connect, status) as nc:
        server = DashboardServer(nc, cluster_name, host=host, port=port, interval=interval,
                                 checkpoint_bucket=checkpoint_bucket, scrape_metrics=scrape)
        try:
            url = await server.start()
            click.echo(f"aether dashboard of cluster {cluster_name}: {url}")
            sys.stdout.flush()
            waiters = {loop.create_task(stop.wait()), loop.create_task(server.wait())}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        finally:
            await server.aclose()
