"""``aether server``: an embedded NATS server (or routed cluster) with JetStream, until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from pathlib import Path

import click
from rich.console import Console

from aether.cli._common import emit_json, fail, on_stop_signals, run
from aether.errors import NatsServerError
from aether.server import NatsCluster, NatsServer

__all__ = ["server"]

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|ms|s|m|h))+")


def _check_sync(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value == "always" or _DURATION.fullmatch(value):
        return value
    raise click.BadParameter(f"{value!r} is neither 'always' nor a duration like '1s', '500ms', '2m'")


@click.command()
@click.option("--cluster", "size", type=click.IntRange(1, 9), default=1, show_default=True,
              help="Number of servers; more than 1 starts a routed JetStream cluster on loopback.")
@click.option("--sync", "sync_interval", callback=_check_sync, default=None, metavar="always|DURATION",
              help="JetStream sync_interval. 'always' fsyncs every write (no loss on power failure, "
                   "slower); the server default (2m) may lose the last writes on power loss.")
@click.option("--store-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the JetStream data here (default: a temporary folder removed on exit).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Client port of a single server [default: 4222; 0 picks a free port].")
@click.option("--json", "as_json", is_flag=True, help="Print the URLs as one JSON line once ready.")
def server(size: int, sync_interval: str | None, store_dir: Path | None, port: int | None, as_json: bool) -> None:
    """Run NATS with JetStream until interrupted (Ctrl-C), printing its URL(s)."""
    if size > 1 and port is not None:
        raise click.BadParameter("--port applies to a single server; a cluster picks free ports", param_hint="--port")
    port = 4222 if port is None else port
    if size == 1 and port and not _port_free(port):
        fail(f"port {port} is in use; try --port 0")
    if store_dir is not None:
        store_dir.mkdir(parents=True, exist_ok=True)
    try:
        run(_serve(size, sync_interval, store_dir, port, as_json))
    except NatsServerError as exc:
        if f"port {port} is in use" in str(exc):  # taken between the check and the start
            fail(f"port {port} is in use; try --port 0")
        raise


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nats-server does
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _serve(size: int, sync_interval: str | None, store_dir: Path | None, port: int, as_json: bool) -> None:
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    servers: list[NatsServer]
    target: NatsServer | NatsCluster
    if size == 1:
        target = NatsServer(store_dir=store_dir, sync_interval=sync_interval, port=port or None)
        servers = [target]
    else:
        cluster = NatsCluster(size, work_dir=store_dir, sync_interval=sync_interval)
        target, servers = cluster, cluster.servers
    try:
        start = asyncio.ensure_future(target.start())
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait({start, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not start.done():  # stopped during start-up: let the start finish, then clean up
            with contextlib.suppress(Exception):
                await start
            return
        start.result()  # NatsServerError: one clear line
        urls = [s.url for s in servers]
        if as_json:
            emit_json({"url": ",".join(urls), "urls": urls, "store_dir": str(store_dir) if store_dir else None,
                       "sync_interval": sync_interval, "pids": [s.pid for s in servers]})
        else:
            console = Console()
            kind = "NATS server" if size == 1 else f"NATS cluster of {size}"
            console.print(f"[bold green]{kind} ready[/] (JetStream"
                          f"{', sync_interval ' + sync_interval if sync_interval else ''})")
            for url in urls:
                console.print(f"  {url}", markup=False)
            console.print(f"  store: {store_dir or 'temporary (removed on exit)'}", markup=False)
            console.print(f"  export AETHER_NATS_URL={','.join(urls)}", style="dim", markup=False)
            console.print("Ctrl-C to stop", style="dim")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()
            dead = [s for s in servers if not s.running]
            if dead:
                names = ", ".join(s.server_name or s.url for s in dead)
                raise click.ClickException(f"nats-server {names} exited unexpectedly (log: {dead[0].log_file})")
    finally:
        await asyncio.shield(asyncio.to_thread(target.cleanup))
