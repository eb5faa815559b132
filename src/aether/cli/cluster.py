"""``aether cluster status``: members, leader and term, shards per node."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aether._nats import JsApi
from aether.cli._common import DEFAULT_STREAM, connection_options, emit_json, out_console, run
from aether.cli._store import connected, list_streams
from aether.cluster.state import ClusterState, read_cluster_state
from aether.connect import ConnectOptions
from aether.errors import AetherError
from aether.store.placement import current_placement

__all__ = ["cluster"]


@click.group()
def cluster() -> None:
    """Inspect a cluster of Aether nodes."""


@cluster.command()
@click.option("--cluster", "-c", "name", envvar="AETHER_CLUSTER", show_envvar=True, default="default",
              show_default=True, help="Cluster name.")
@click.option("--ping/--no-ping", default=True, show_default=True, help="Ask each member for its live status.")
@click.option("--stream", envvar="AETHER_STREAM", show_envvar=True, default=DEFAULT_STREAM, show_default=True,
              help="Stream base name whose placement on the NATS servers is shown.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
def status(name: str, ping: bool, stream: str, as_json: bool, connect: ConnectOptions) -> None:
    """Show the members, the leader and its term, the shards per node, and which NATS server
    leads each stream (each partition) of the event store."""
    state, placement = run(_status(name, ping, stream, connect))
    if as_json:
        emit_json({**state.to_json(), "placement": placement})
    else:
        console = out_console()
        render_status(console, state)
        render_placement(console, placement)


async def _status(name: str, ping: bool, stream: str, connect: ConnectOptions) -> tuple[ClusterState,
                                                                                          list[dict[str, Any]]]:
    async with connected(connect) as nc:
        state = await read_cluster_state(nc, name, ping=ping)
        return state, await stream_placement(nc, stream)


async def stream_placement(nc: Any, base: str) -> list[dict[str, Any]]:
    """Per namespace of ``base``: its streams (partitions) and the NATS server leading each.
    Empty when nothing can be read (no such stream, or JetStream unavailable)."""
    try:
        refs = await list_streams(nc, base)
    except AetherError:
        return []
    api = JsApi(nc)
    out: list[dict[str, Any]] = []
    try:
        for ref in refs:
            try:
                placements = await current_placement(api, ref.streams)
            except AetherError:
                continue
            out.append({"stream": ref.stream, "namespace": ref.namespace, "partitions": len(ref.streams),
                        "leaders": [p.leader for p in placements]})
    finally:
        await api.aclose()
    return out


def render_placement(console: Console, placement: list[dict[str, Any]]) -> None:
    """Which server leads how many streams (partitions), per namespace."""
    if not placement:
        return
    table = Table(show_edge=False, title="stream leaders per NATS server", title_justify="left")
    for column in ("namespace", "stream", "partitions", "leaders per server"):
        table.add_column(column, justify="right" if column == "partitions" else "left")
    for row in placement:
        counts = Counter(leader or "none" for leader in row["leaders"])
        table.add_row(row["namespace"] or "(none)", row["stream"], str(row["partitions"]),
                      ", ".join(f"{server}: {n}" for server, n in sorted(counts.items())))
    console.print(table)


def render_status(console: Console, state: ClusterState) -> None:
    """Print a cluster's state as tables."""
    leader = f"[bold]{escape(state.leader_id)}[/] (term {state.term})" if state.leader_id else "[red]none[/]"
    console.print(f"cluster [bold]{escape(state.cluster)}[/]: leader {leader}; shard map v{state.map_version} "
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
        status = escape(member.status)
        if member.reachable is False:
            status = "[red]unreachable[/]"
        elif member.id == state.leader_id:
            status += " [bold yellow](leader)[/]"
        uptime = int((now - member.started_at).total_seconds())
        table.add_row(escape(member.id), status, str(member.shards), str(member.in_flight), str(member.requests),
                      f"{member.event_loop_lag * 1000:.1f} ms", f"{uptime}s ago", escape(member.address))
    if state.members:
        console.print(table)
    else:
        console.print("no live members")
