"""``aether demo``: the whole library at work in under a minute (see :mod:`aether.demo.runner`)."""

from __future__ import annotations

import click

from aether.cli._common import DEFAULT_STREAM, connection_options, fail, out_console, run
from aether.connect import ConnectOptions

__all__ = ["MAX_DEMO_NODES", "demo"]

MAX_DEMO_NODES = 16
"""Node processes the demo starts at most: 16 form in a few seconds on 2 cores (see docs/cluster.md)."""


@click.command()
@click.option("--accounts", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Number of bank accounts.")
@click.option("--duration", type=click.FloatRange(min=1.0), default=25.0, show_default=True,
              help="Seconds of load after the accounts are opened.")
@click.option("--nodes", type=click.IntRange(1, MAX_DEMO_NODES), default=3, show_default=True,
              help="Cluster node processes (each holds 64/N shards, balanced to within one).")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=24, show_default=True,
              help="Commands in flight at once.")
@click.option("--kill", type=click.Choice(["leader", "member", "none"]), default="leader", show_default=True,
              help="Which node to SIGKILL part-way (and restart later).")
@click.option("--seed", type=int, default=None, help="Seed of the random workload.")
@click.option("--stream", default=DEFAULT_STREAM, show_default=True, help="Stream base name.")
@click.option("--live/--plain", default=None, help="Live view or plain lines [default: live on a terminal].")
@click.option("--dashboard", is_flag=True, help="Serve the web dashboard of the demo's cluster while it runs "
                                                "(prints its URL; needs the 'dashboard' extra).")
@click.option("--dashboard-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the dashboard (0: a free one).")
@connection_options
def demo(accounts: int, duration: float, nodes: int, concurrency: int, kill: str, seed: int | None, stream: str,
         live: bool | None, dashboard: bool, dashboard_port: int, connect: ConnectOptions) -> None:
    """Run bank accounts on a 3-node cluster, kill and restart a node, verify every history.

    Without --nats-url (or AETHER_NATS_URL) an embedded NATS server runs in a temporary folder.
    Exits 0 only when the verification passes.
    """
    from aether.demo.runner import DemoConfig, run_demo

    if dashboard:
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            fail("--dashboard needs starlette and uvicorn: pip install 'aether-nats[dashboard]'")

    config = DemoConfig(accounts=accounts, duration=duration, nodes=nodes, concurrency=concurrency,
                        kill=kill,  # type: ignore[arg-type]
                        connect=connect, stream=stream, seed=seed, live=live, dashboard=dashboard,
                        dashboard_port=dashboard_port)
    result = run(run_demo(config, out_console()))
    if not result.ok:
        click.get_current_context().exit(1)
