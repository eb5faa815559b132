"""``aether node``: run one cluster node hosting actors, with a Prometheus ``/metrics`` endpoint.

By default the node hosts the demo's bank accounts (:mod:`aether.demo.bank`). ``--handler
module:attribute`` hosts your own actors instead: the attribute is a *handler factory*, called
once with a :class:`NodeContext` (connection, store, cluster node), that returns the request
handler (``async def handle(request: ActorRequest) -> bytes``)::

    # myapp/handlers.py
    def make(context: NodeContext) -> RequestHandler:
        async def handle(request: ActorRequest) -> bytes:
            ...  # load the actor from context.store, apply the command, save
        return handle

    $ aether node --node-id n1 --handler myapp.handlers:make
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from aether.cli._common import DEFAULT_STREAM, connection_options, emit_json, fail, on_stop_signals, run
from aether.cli._status import ConnectionStatus
from aether.cluster import ClusterManager, ClusterOptions
from aether.connect import ConnectOptions, close
from aether.errors import AetherError, AetherTimeoutError, InvalidInputError, MetricsUnavailableError
from aether.store import JetStreamEventStore

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["DEFAULT_HANDLER", "NodeContext", "load_handler_factory", "node"]

DEFAULT_HANDLER = "aether.demo.bank:bank_handler"


@dataclass(slots=True)
class NodeContext:
    """What a handler factory gets to build its request handler.

    Attributes:
        nc: the node's NATS connection.
        node: the :class:`~aether.cluster.ClusterManager` (not started yet when the factory runs:
            register shard listeners here).
        store: the node's :class:`~aether.store.JetStreamEventStore`.
        node_id / cluster / namespace: as given on the command line.
        options: extra ``--set key=value`` pairs for the handler. Read them in the factory: a
            key the factory did not read is refused as unknown (exit code 2).
    """

    nc: Client
    node: ClusterManager
    store: JetStreamEventStore
    node_id: str
    cluster: str
    namespace: str | None
    options: dict[str, str]
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``await callback()`` when the node stops (after it left the cluster)."""
        self.cleanups.append(callback)


def load_handler_factory(spec: str) -> Any:
    """Import ``module:attribute`` and return the attribute.

    Raises:
        InvalidInputError: a malformed spec, a missing module or attribute, or a non-callable.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise InvalidInputError(f"handler must be given as module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(f"cannot import handler module {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise InvalidInputError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise InvalidInputError(f"handler factory {spec!r} is not callable")
    return target


class _Settings(dict[str, str]):
    """The ``--set`` pairs, remembering which keys the handler factory read (the others are unknown)."""

    def __init__(self, items: dict[str, str]) -> None:
        super().__init__(items)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)

    def unknown(self) -> list[str]:
        return sorted(set(self) - self.read)


def _parse_settings(items: tuple[str, ...]) -> _Settings:
    settings: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--set")
        settings[key] = value
    return _Settings(settings)


async def _wait_serving(manager: ClusterManager, timeout: float) -> None:
    """Wait until the shard map names this node's incarnation and it serves every shard the map
    gives it (a map left over from an earlier run of the same cluster name does not count).

    Raises:
        AetherTimeoutError: not within ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await manager.wait_ready(timeout=timeout)
    while True:
        current = manager.shard_map
        if (current is not None and current.members.get(manager.node_id) == manager.incarnation
                and manager.owned_shards() == current.shards_of(manager.node_id, manager.incarnation)):
            return
        if loop.time() > deadline:
            raise AetherTimeoutError(f"node {manager.node_id!r} does not serve its shards after {timeout:g}s")
        await asyncio.sleep(0.05)


@click.command()
@click.option("--node-id", default=None, help="Node id, unique in the cluster [default: <host>-<pid>].")
@click.option("--cluster", "-c", "cluster_name", envvar="AETHER_CLUSTER", show_envvar=True, default="default",
              show_default=True, help="Cluster name.")
@click.option("--stream", envvar="AETHER_STREAM", show_envvar=True, default=DEFAULT_STREAM, show_default=True,
              help="Stream base name of the actors' events.")
@click.option("--namespace", "-n", envvar="AETHER_NAMESPACE", show_envvar=True, default=None, help="Namespace.")
@click.option("--handler", "handler_spec", default=DEFAULT_HANDLER, show_default=True, metavar="MODULE:ATTR",
              help="Handler factory hosting the actors (default: the demo's bank accounts).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Option for the handler (repeatable).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the /metrics endpoint (0: a free port).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address of the /metrics endpoint.")
@click.option("--no-metrics", is_flag=True, help="Do not serve /metrics.")
@click.option("--shard-count", type=click.IntRange(1, 65536), default=64, show_default=True,
              help="Shards of the cluster (every node must agree).")
@click.option("--replicas", type=click.IntRange(1, 5), default=1, show_default=True,
              help="Replicas of the cluster bucket and the event stream (3 on a NATS cluster).")
@click.option("--weight", type=click.IntRange(1, 1000), default=1, show_default=True, help="Relative capacity.")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Seconds to wait for the first shard map.")
@click.option("--json", "as_json", is_flag=True, help="Report readiness and shutdown as JSON lines.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default="WARNING", show_default=True, help="Log level of the node's log lines (stderr).")
@click.option("--exit-with-parent", is_flag=True, hidden=True, help="Stop when the parent process dies.")
@connection_options
def node(node_id: str | None, cluster_name: str, stream: str, namespace: str | None, handler_spec: str,
         settings: tuple[str, ...], metrics_port: int, metrics_host: str, no_metrics: bool, shard_count: int,
         replicas: int, weight: int, ready_timeout: float, as_json: bool, log_level: str, exit_with_parent: bool,
         connect: ConnectOptions) -> None:
    """Run one cluster node hosting actors until interrupted."""
    factory = load_handler_factory(handler_spec)
    node_id = node_id or f"{socket.gethostname()}-{os.getpid()}"
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s {node_id} %(levelname)s %(name)s: %(message)s")
    options = ClusterOptions(shard_count=shard_count, replicas=replicas)
    run(_run_node(node_id, cluster_name, stream, namespace, factory,
                  _parse_settings(settings), None if no_metrics else (metrics_host, metrics_port), options, weight,
                  ready_timeout, as_json, os.getppid() if exit_with_parent else None, connect))


async def _run_node(node_id: str, cluster_name: str, stream: str, namespace: str | None, factory: Any,
                    settings: _Settings, metrics: tuple[str, int] | None, options: ClusterOptions, weight: int,
                    ready_timeout: float, as_json: bool, parent: int | None, connect: ConnectOptions) -> None:
    console = Console(stderr=True)
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    store_observer: Any = None
    cluster_observer: Any = None
    server: Any = None
    if metrics is not None:
        try:
            from aether.metrics import StoreMetrics, start_metrics_server
            from aether.metrics.cluster import ClusterMetrics

            store_observer, cluster_observer = StoreMetrics(), ClusterMetrics()
            server = start_metrics_server(metrics[1], host=metrics[0])
        except MetricsUnavailableError as exc:
            console.print(f"metrics disabled: {exc}", style="yellow", markup=False, soft_wrap=True)
    status = ConnectionStatus(console, f"node {node_id}")
    nc = await connect.connect(name=f"aether-node-{node_id}", **status.callbacks())
    status.nc = nc
    manager: ClusterManager | None = None
    store: JetStreamEventStore | None = None
    context: NodeContext | None = None
    try:
        store = await JetStreamEventStore.create(nc, stream, namespace=namespace, replicas=options.replicas,
                                                 observer=store_observer)
        metadata = {"pid": str(os.getpid())}
        if server is not None:
            metadata["metrics"] = server.url
        manager = ClusterManager(nc, node_id=node_id, cluster=cluster_name, options=options, weight=weight,
                                 metadata=metadata, observer=cluster_observer)
        context = NodeContext(nc=nc, node=manager, store=store, node_id=node_id, cluster=cluster_name,
                              namespace=namespace, options=settings)
        handler = factory(context)
        if inspect.isawaitable(handler):
            handler = await handler
        if settings.unknown():
            known = ", ".join(sorted(settings.read)) or "none"
            fail(f"unknown --set key(s) for this handler: {', '.join(settings.unknown())} (it reads: {known})",
                 code=2)
        if not callable(handler):
            fail(f"the handler factory returned {type(handler).__name__}, not a request handler")
        manager.set_handler(handler)
        await manager.start()
        try:
            await _wait_serving(manager, ready_timeout)
        except AetherTimeoutError as exc:
            console.print(f"{exc}; serving once it does", style="yellow", markup=False, soft_wrap=True)
        info = {"event": "ready", "node_id": node_id, "cluster": cluster_name, "pid": os.getpid(),
                "metrics_url": server.url if server is not None else None, "leader": manager.leader_id,
                "shards": len(manager.owned_shards())}
        if as_json:
            emit_json(info)
        else:
            console.print(f"node [bold]{escape(node_id)}[/] (pid {os.getpid()}) serving cluster "
                          f"[bold]{escape(cluster_name)}[/] (stream {store.stream}); leader "
                          f"{escape(str(manager.leader_id))}; {len(manager.owned_shards())} shards; "
                          f"metrics {info['metrics_url'] or 'off'}; Ctrl-C to leave", soft_wrap=True)
        sys.stdout.flush()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()
            if parent is not None and os.getppid() != parent:
                break
    finally:
        if manager is not None:
            with contextlib.suppress(AetherError):
                await manager.stop()
        for cleanup in context.cleanups if context is not None else []:
            try:
                await cleanup()
            except Exception as exc:
                console.print(f"node {node_id}: cleanup failed: {exc}", style="yellow", markup=False)
        if store is not None:
            await store.aclose()
        status.close()
        with contextlib.suppress(Exception):
            await close(nc)
        if server is not None:
            await server.aclose()
    if as_json:
        emit_json({"event": "stopped", "node_id": node_id})

