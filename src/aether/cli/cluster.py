"""``aether cluster status``: members, leader and term, shards per node."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from rich.console import Console
from rich.table import Table

from aether.cli._cluster_state import ClusterState, read_cluster_state
from aether.cli._common import connection_options, emit_json, out_console, run
from aether.cli._store import connected
from aether.connect import ConnectOptions

__all__ = ["cluster"]


@click.group()
def cluster() -> None:
    """Inspect a cluster of Aether nodes."""


@cluster.command()
@click.option("--cluster", "-c", "name", envvar="AETHER_CLUSTER", show_envvar=True, default="default",
              show_default=True, help="Cluster name.")
@click.option("--ping/--no-ping", default=True, show_default=True, help="Ask each member for its live status.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
def status(name: str, ping: bool, as_json: bool, connect: ConnectOptions) -> None:
    """Show the members, the leader and its term, and the shards per node."""
    state = run(_status(name, ping, connect))
    if as_json:
        emit_json(state.to_json())
    else:
        render_status(out_console(), state)


async def _status(name: str, ping: bool, connect: ConnectOptions) -> ClusterState:
    async with connected(connect) as nc:
        return await read_cluster_state(nc, name, ping=ping)


def render_status(console: Console, state: ClusterState) -> None:
    """Print a cluster's state as tables."""
    leader = f"[bold]{state.leader_id}[/] (term {state.term})" if state.leader_id else "[red]none[/]"
    console.print(f"cluster [bold]{state.cluster}[/]: leader {leader}; shard map v{state.map_version} "
                  f"(term {state.map_term}), {state.shard_count} shards, {state.handoffs} in handoff, "
                  f"{state.unassigned} unassigned")
    if state.members:
        low, high = state.shard_spread()
        fair_low, fair_high = state.fair_range()
        verdict = "[green]balanced[/]" if state.balanced else f"[yellow]not balanced[/] (fair: {fair_low}-{fair_high})"
        console.print(f"shards per node: min {low}, max {high}, {verdict}")
    table = Table(show_edge=False)
    for column in ("node", "status", "shards", "in flight", "requests", "loop lag", "up since", "address"):
        table.add_column(column, justify="right" if column in ("shards", "in flight", "requests", "loop lag")
                         else "left")
    now = datetime.now(UTC)
    for member in state.members:
        status = member.status
        if member.reachable is False:
            status = "[red]unreachable[/]"
        elif member.id == state.leader_id:
            status += " [bold yellow](leader)[/]"
        uptime = int((now - member.started_at).total_seconds())
        table.add_row(member.id, status, str(member.shards), str(member.in_flight), str(member.requests),
                      f"{member.event_loop_lag * 1000:.1f} ms", f"{uptime}s ago", member.address)
    if state.members:
        console.print(table)
    else:
        console.print("no live members")
