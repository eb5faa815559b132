"""``aether events show|tail|stats``: inspect what a store holds."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
from collections import Counter
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aether._nats.apps import follow_ordered, stream_last_sequence
from aether.cli._common import (
    connection_options,
    emit_json,
    fail,
    forget_stop_signals,
    on_stop_signals,
    out_console,
    run,
    store_options,
)
from aether.cli._status import ConnectionStatus
from aether.cli._store import StreamRef, connected, list_streams, matches_namespace, open_store, subject_counts
from aether.codec import decode_event
from aether.connect import ConnectOptions
from aether.errors import AetherError, CorruptEventError, StoreError
from aether.event import Event
from aether.names import decode_token, encode_token, stream_name, validate_namespace, validate_namespace_pattern
from aether.store.placement import PartitionPlacement

__all__ = ["events"]

_PREFIX = "aether"
_GLOB = frozenset("*?[")


def _json_data(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _time(event: Event) -> str:
    return event.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@click.group()
def events() -> None:
    """Inspect the events of a store."""


# ---- show ---------------------------------------------------------------------------------
@events.command()
@click.argument("actor")
@click.option("--from-version", type=click.IntRange(min=0), default=0, help="First version to show.")
@click.option("--last", type=click.IntRange(min=1), default=None, help="Show only the last N events.")
@click.option("--metadata", is_flag=True, help="Show each event's metadata and id.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of events.")
@store_options
@connection_options
def show(actor: str, from_version: int, last: int | None, metadata: bool, as_json: bool, stream: str,
         namespace: str | None, connect: ConnectOptions) -> None:
    """Show the history of ACTOR."""
    run(_show(actor, from_version, last, metadata, as_json, stream, namespace, connect))


async def _show(actor: str, from_version: int, last: int | None, metadata: bool, as_json: bool, stream: str,
                namespace: str | None, connect: ConnectOptions) -> None:
    async with connected(connect) as nc:
        store = await open_store(nc, stream, namespace)
        try:
            history = await store.get_events(actor, from_version)
            latest = history[-1].version if history else await store.get_latest_version(actor)
        finally:
            await store.aclose()
    where = f"stream {store.stream!r}"
    if latest == 0:
        fail(f"actor {actor!r} has no events in {where}")
    if last is not None:
        history = history[-last:]
    if as_json:
        emit_json(history)
        return
    console = out_console()
    if not history:
        console.print(f"actor {actor!r}: no events from version {from_version} (latest version is {latest})",
                      markup=False)
        return
    table = Table(title=escape(f"{actor!r} in {store.stream} — {latest} events"), title_justify="left")
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("type", style="bold", no_wrap=True)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("data", overflow="fold")
    if metadata:
        table.add_column("metadata", overflow="fold")
        table.add_column("id")
    for event in history:
        row = [str(event.version), event.event_type, _time(event), _json_data(event.data)]
        if metadata:
            row += [_json_data(event.metadata), event.id]
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)


# ---- stats --------------------------------------------------------------------------------
@events.command()
@click.option("--all", "all_namespaces", is_flag=True, help="One row per namespace of the stream.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_options
@connection_options
def stats(all_namespaces: bool, as_json: bool, stream: str, namespace: str | None, connect: ConnectOptions) -> None:
    """Show what a stream holds: actors, events, snapshots, bytes."""
    run(_stats(all_namespaces, as_json, stream, namespace, connect))


async def _chosen_streams(nc: Any, all_namespaces: bool, stream: str, namespace: str | None) -> list[StreamRef]:
    """The stream of ``--namespace`` (or of no namespace), or with ``--all`` every namespace's
    (exits with a usage error on both, with an error when ``--all`` finds none)."""
    if not all_namespaces:
        return [StreamRef(stream_name(stream, namespace), namespace)]
    if namespace is not None:
        fail("--all and --namespace exclude each other", code=2)
    refs = await list_streams(nc, stream)
    if not refs:
        fail(f"no stream of base name {stream!r} exists")
    return refs


def _placement_row(partition: int, placement: PartitionPlacement, messages: int) -> dict[str, Any]:
    """One partition's row of the ``placement`` list in ``stats`` and ``rebalance`` output."""
    return {"partition": partition, "stream": placement.stream, "leader": placement.leader, "messages": messages,
            "replicas": [name for name, _ in placement.replicas]}


async def _stream_stats(nc: Any, ref: StreamRef) -> dict[str, Any]:
    store = await open_store(nc, ref.stream.split("__", 1)[0], ref.namespace)
    try:
        infos = await store.partition_info()
        placements = await store.placement()
    finally:
        await store.aclose()
    events_per_actor: dict[str, int] = {}
    snapshots: dict[str, int] = {}
    for name in store.streams:
        events_per_actor.update(await subject_counts(nc, name, f"{_PREFIX}.{name}.e.*"))
        snapshots.update(await subject_counts(nc, name, f"{_PREFIX}.{name}.s.*"))
    states = [info.get("state", {}) for info in infos]
    config = infos[0].get("config", {})
    row: dict[str, Any] = {
        "stream": ref.stream,
        "namespace": ref.namespace,
        "partitions": store.partitions,
        "actors": len(events_per_actor),
        "events": sum(events_per_actor.values()),
        "snapshots": sum(snapshots.values()),
        "max_events_per_actor": max(events_per_actor.values(), default=0),
        "messages": sum(int(state.get("messages", 0)) for state in states),
        "bytes": sum(int(state.get("bytes", 0)) for state in states),
    }
    if store.partitions == 1:
        row["first_seq"] = int(states[0].get("first_seq", 0))
        row["last_seq"] = int(states[0].get("last_seq", 0))
    row.update({"replicas": int(config.get("num_replicas", 1)), "storage": config.get("storage", ""),
                "created": infos[0].get("created")})
    leaders = Counter(p.leader for p in placements if p.leader)
    row["leaders"] = ", ".join(f"{server}: {n}" for server, n in sorted(leaders.items())) or None
    row["placement"] = [_placement_row(i, p, int(state.get("messages", 0)))
                        for i, (p, state) in enumerate(zip(placements, states, strict=True))]
    return row


async def _stats(all_namespaces: bool, as_json: bool, stream: str, namespace: str | None,
                 connect: ConnectOptions) -> None:
    async with connected(connect) as nc:
        refs = await _chosen_streams(nc, all_namespaces, stream, namespace)
        rows = [await _stream_stats(nc, ref) for ref in refs]
    if as_json:
        emit_json(rows if all_namespaces else rows[0])
        return
    console = out_console()
    if all_namespaces:
        table = Table(title=f"streams of {stream!r}", title_justify="left")
        for column in ("namespace", "stream", "partitions", "actors", "events", "snapshots", "bytes", "replicas",
                       "leaders"):
            if column in ("namespace", "stream", "leaders"):
                table.add_column(column, overflow="fold")
            else:
                table.add_column(column, justify="right", no_wrap=True)
        for row in rows:
            table.add_row(escape(row["namespace"] or "(none)"), row["stream"], str(row["partitions"]),
                          f"{row['actors']:,}", f"{row['events']:,}", f"{row['snapshots']:,}", f"{row['bytes']:,}",
                          str(row["replicas"]), escape(row["leaders"] or ""))
        console.print(table)
        return
    row = rows[0]
    table = Table(title=f"stream {row['stream']}", title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in row.items():
        if key == "placement":
            continue
        table.add_row(key, "" if value is None else f"{value:,}" if isinstance(value, int) else escape(str(value)))
    console.print(table)
    _print_placement(console, row["placement"])


def _print_placement(console: Console, placement: list[dict[str, Any]]) -> None:
    """One row per partition: its stream, leader, replicas and messages."""
    if len(placement) < 2 and not any(p["leader"] for p in placement):
        return
    table = Table(title="placement", title_justify="left")
    for column in ("partition", "stream", "leader", "replicas", "messages"):
        table.add_column(column, justify="right" if column in ("partition", "messages") else "left")
    for p in placement:
        table.add_row(str(p["partition"]), p["stream"], p["leader"] or "[red]none[/]", ", ".join(p["replicas"]),
                      f"{p['messages']:,}")
    console.print(table)


# ---- rebalance ----------------------------------------------------------------------------
@events.command()
@click.option("--all", "all_namespaces", is_flag=True, help="Every namespace of the stream.")
@click.option("--timeout", type=click.FloatRange(min=1.0), default=30.0, show_default=True,
              help="Seconds to spend moving leaders (per namespace).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_options
@connection_options
def rebalance(all_namespaces: bool, timeout: float, as_json: bool, stream: str, namespace: str | None,
              connect: ConnectOptions) -> None:
    """Spread the partition leaders of a namespace evenly over the NATS servers."""
    run(_rebalance(all_namespaces, timeout, as_json, stream, namespace, connect))


async def _rebalance(all_namespaces: bool, timeout: float, as_json: bool, stream: str, namespace: str | None,
                     connect: ConnectOptions) -> None:
    async with connected(connect) as nc:
        refs = await _chosen_streams(nc, all_namespaces, stream, namespace)
        results: list[dict[str, Any]] = []
        for ref in refs:
            store = await open_store(nc, stream, ref.namespace)
            try:
                before = await store.placement()
                after = await store.rebalance_leaders(timeout=timeout)
            finally:
                await store.aclose()
            moved = sum(1 for a, b in zip(before, after, strict=True) if a.leader != b.leader)
            results.append({"stream": ref.stream, "namespace": ref.namespace, "partitions": store.partitions,
                            "moved": moved,
                            "placement": [_placement_row(i, p, 0) for i, p in enumerate(after)]})
    if as_json:
        emit_json(results if all_namespaces else results[0])
        return
    console = out_console()
    for result in results:
        leaders = Counter(p["leader"] for p in result["placement"] if p["leader"])
        spread = ", ".join(f"{server}: {n}" for server, n in sorted(leaders.items())) or "no leaders (not clustered)"
        console.print(f"stream {result['stream']}: {result['partitions']} partition(s), {result['moved']} leader(s) "
                      f"moved; leaders per server: {spread}")


# ---- tail ---------------------------------------------------------------------------------
@events.command()
@click.argument("pattern", required=False, default="*")
@click.option("--from-start", is_flag=True, help="Replay the stored events first, then follow.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N events.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None,
              help="Stop after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
@store_options
@connection_options
def tail(pattern: str, from_start: bool, count: int | None, timeout: float | None, as_json: bool, stream: str,
         namespace: str | None, connect: ConnectOptions) -> None:
    """Follow new events as they are stored.

    PATTERN selects actors by id, with shell-style wildcards (default: every actor).
    --namespace may be a NATS-style pattern ('tenant-*' is not one, 'acme.*' and '>' are).
    """
    if namespace is not None:
        validate_namespace_pattern(namespace)
    run(_tail(pattern, from_start, count, timeout, as_json, stream, namespace, connect))


async def _tail(pattern: str, from_start: bool, count: int | None, timeout: float | None, as_json: bool,
                stream: str, namespace: str | None, connect: ConnectOptions) -> None:
    console = Console(stderr=True)
    out = Console(highlight=False)
    seen = 0
    done = asyncio.Event()
    queue: asyncio.Queue[tuple[StreamRef, Any]] = asyncio.Queue(maxsize=10_000)
    wildcard = namespace is not None and any(t in ("*", ">") for t in namespace.split("."))
    exact_actor = pattern if not (_GLOB & set(pattern)) else None
    loop = asyncio.get_running_loop()
    status = ConnectionStatus(console, "events tail")
    on_stop_signals(done.set)
    try:
        async with connected(connect, status) as nc:
            if wildcard:
                assert namespace is not None
                refs = [r for r in await list_streams(nc, stream) if matches_namespace(namespace, r.namespace)]
                if not refs:
                    fail(f"no namespace of stream {stream!r} matches {namespace!r}")
            else:
                ns = validate_namespace(namespace) if namespace is not None else None
                store = await open_store(nc, stream, ns)  # fails clearly when the stream is missing
                await store.aclose()
                refs = [StreamRef(store.stream, ns, store.streams if store.partitions > 1 else ())]
            follower = _Follower(nc, refs, exact_actor, queue)
            await follower.start(from_start)
            names = ", ".join(r.stream for r in refs)
            console.print(f"following {names} (actors: {pattern!r}); Ctrl-C to stop", style="dim", markup=False)
            deadline = None if timeout is None else loop.time() + timeout
            try:
                while not done.is_set():
                    remaining = None if deadline is None else deadline - loop.time()
                    if remaining is not None and remaining <= 0:
                        break
                    if status.back.is_set():  # reconnected: consumers may be gone (server restart)
                        status.back.clear()
                        if not await follower.resume(console, done):
                            continue
                    getter = asyncio.ensure_future(queue.get())
                    stopper = asyncio.ensure_future(done.wait())
                    reconnected = asyncio.ensure_future(status.back.wait())
                    finished, _ = await asyncio.wait({getter, stopper, reconnected}, timeout=remaining,
                                                     return_when=asyncio.FIRST_COMPLETED)
                    stopper.cancel()
                    reconnected.cancel()
                    if getter not in finished:
                        getter.cancel()
                        continue
                    ref, msg = getter.result()
                    event = _decode(ref, msg)
                    if event is None or not fnmatch.fnmatchcase(event.actor_id, pattern):
                        continue
                    _print_event(out, ref, event, as_json)
                    seen += 1
                    if count is not None and seen >= count:
                        break
            finally:
                await follower.stop()
            lost = status.lost
    finally:
        forget_stop_signals()
    console.print(f"{seen} events", style="dim")
    if lost and not done.is_set():
        fail(f"--timeout ended while the connection to NATS was lost ({seen} events shown)")


class _Follower:
    """Ordered consumers on the followed streams (every partition of a partitioned namespace),
    resumed right after the last event received when the connection comes back (the server may
    have restarted and forgotten them)."""

    def __init__(self, nc: Any, refs: list[StreamRef], exact_actor: str | None,
                 queue: asyncio.Queue[tuple[StreamRef, Any]]) -> None:
        self._nc = nc
        self._targets = [(ref, name) for ref in refs for name in ref.streams]
        self._token = encode_token(exact_actor) if exact_actor is not None else "*"
        self._queue = queue
        self._next: dict[str, int] = {}  # per stream: the sequence to resume at (0: from the start)
        self._subs: dict[str, Any] = {}

    async def start(self, from_start: bool) -> None:
        for ref, name in self._targets:
            if from_start:
                self._next[name] = 0
            else:
                try:
                    self._next[name] = await stream_last_sequence(self._nc, name) + 1
                except AetherError as exc:
                    raise StoreError(f"cannot follow {exc}") from exc
            await self._subscribe(ref, name)

    async def _subscribe(self, ref: StreamRef, name: str) -> None:
        async def deliver(msg: Any) -> None:
            try:
                self._queue.put_nowait((ref, msg))
            except asyncio.QueueFull:
                return
            with contextlib.suppress(Exception):
                self._next[name] = msg.metadata.sequence.stream + 1

        try:
            self._subs[name] = await follow_ordered(self._nc, f"{_PREFIX}.{name}.e.{self._token}", stream=name,
                                                    start_sequence=self._next[name], deliver=deliver)
        except AetherError as exc:
            raise StoreError(f"cannot follow {exc}") from exc

    async def resume(self, console: Console, done: asyncio.Event) -> bool:
        """Recreate the consumers after a reconnection; ``False`` when stopped meanwhile."""
        await self.stop()
        for ref, name in self._targets:
            said = False
            while not done.is_set():
                try:
                    await self._subscribe(ref, name)
                    break
                except StoreError as exc:  # e.g. JetStream not ready yet after a server restart
                    if not said:
                        console.print(f"aether: events tail: cannot resume following {name!r} yet "
                                      f"({exc}); retrying", style="yellow", highlight=False, soft_wrap=True)
                        said = True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(done.wait(), 1.0)
            if done.is_set():
                return False
        return True

    async def stop(self) -> None:
        subs, self._subs = self._subs, {}
        for sub in subs.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def _decode(ref: StreamRef, msg: Any) -> Event | None:
    try:
        actor_id = decode_token(msg.subject.rsplit(".", 1)[1])
        return decode_event(msg.data, stream=ref.stream, actor_id=actor_id)
    except (CorruptEventError, AetherError, IndexError):
        return None


def _print_event(out: Console, ref: StreamRef, event: Event, as_json: bool) -> None:
    if as_json:
        record = msgspec.to_builtins(event)
        record["namespace"] = ref.namespace
        emit_json(record)
        return
    ns = f"[cyan]{escape(ref.namespace)}[/] " if ref.namespace else ""
    out.print(f"{_time(event)} {ns}[bold]{escape(event.actor_id)}[/] v{event.version} "
              f"[green]{escape(event.event_type)}[/] {escape(_json_data(event.data))}", markup=True, soft_wrap=True)
