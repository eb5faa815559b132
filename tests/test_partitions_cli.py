"""The command line on partitioned namespaces: show, stats (with placement), tail, rebalance, cluster status."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import nats
import pytest
from rich.console import Console

from aether._nats import JsApi
from aether.cli._store import list_streams
from aether.cli.cluster import render_placement, stream_placement
from aether.errors import AetherError
from aether.event import Event
from aether.store import JetStreamEventStore
from aether.testing import NatsCluster
from test_cli import Proc, invoke, procs  # noqa: F401  (procs is a fixture)
from test_partitions_cluster import bunch_leaders

pytestmark = pytest.mark.anyio


async def seed(url: str, stream: str, namespace: str | None, actors: dict[str, int], partitions: int = 3) -> None:
    nc = await nats.connect(url)
    try:
        store = await JetStreamEventStore.create(nc, stream, namespace=namespace, storage="memory",
                                                 partitions=partitions)
        for actor, n in actors.items():
            first = await store.get_latest_version(actor) + 1
            await store.save_events([Event("Deposited", actor, v, {"amount": v}) for v in range(first, first + n)])
        await store.aclose()
    finally:
        await nc.close()


async def test_show_stats_and_list_on_partitions(nats_url: str, unique_name: str) -> None:
    actors = {f"acct-{i}": i % 4 + 1 for i in range(12)}
    await seed(nats_url, unique_name, "shop", actors)
    await seed(nats_url, unique_name, "plain", {"x": 2}, partitions=1)
    env = {"AETHER_NATS_URL": nats_url, "AETHER_STREAM": unique_name}
    shown = await asyncio.to_thread(invoke, "events", "show", "acct-3", "--namespace", "shop", "--json", env=env)
    assert shown.exit_code == 0, shown.stderr
    assert [e["version"] for e in json.loads(shown.stdout)] == [1, 2, 3, 4]
    result = await asyncio.to_thread(invoke, "events", "stats", "--namespace", "shop", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["partitions"] == 3 and stats["actors"] == 12 and stats["events"] == sum(actors.values())
    assert [p["stream"] for p in stats["placement"]] == [f"{unique_name}__shop___p{i}" for i in range(3)]
    assert sum(p["messages"] for p in stats["placement"]) == stats["messages"] == sum(actors.values())
    every = json.loads((await asyncio.to_thread(invoke, "events", "stats", "--all", "--json", env=env)).stdout)
    assert {(row["namespace"], row["partitions"], row["events"]) for row in every} == {
        ("shop", 3, sum(actors.values())), ("plain", 1, 2)}
    table = await asyncio.to_thread(invoke, "events", "stats", "--namespace", "shop", env=env)
    assert table.exit_code == 0 and "placement" in table.stdout and f"{unique_name}__shop___p2" in table.stdout
    nc = await nats.connect(nats_url)
    try:
        refs = {ref.namespace: ref for ref in await list_streams(nc, unique_name)}
        assert set(refs) == {"shop", "plain"}
        assert refs["shop"].streams == tuple(f"{unique_name}__shop___p{i}" for i in range(3))
        assert refs["plain"].streams == (f"{unique_name}__plain",)
    finally:
        await nc.close()
    moved = await asyncio.to_thread(invoke, "events", "rebalance", "--namespace", "shop", "--json", env=env)
    assert moved.exit_code == 0, moved.stderr
    assert json.loads(moved.stdout)["moved"] == 0  # one server: nothing to move


async def test_tail_follows_every_partition(nats_url: str, unique_name: str, procs: list[Proc]) -> None:  # noqa: F811
    await seed(nats_url, unique_name, "t", {f"old-{i}": 1 for i in range(6)})
    base = ["--nats-url", nats_url, "--stream", unique_name, "--namespace", "t"]
    # partitions are followed side by side: stored and new events of different partitions may
    # interleave, so the replay selects the stored actors
    replay = Proc(["events", "tail", "old-*", "--from-start", "--count", "6", "--json", "--timeout", "60", *base])
    procs.append(replay)
    follow = Proc(["events", "tail", "new-*", "--count", "8", "--json", "--timeout", "60", *base])
    procs.append(follow)
    assert follow.proc.stderr is not None
    wait_for_line = follow.proc.stderr.readline
    await asyncio.to_thread(lambda: "following" in wait_for_line())
    await seed(nats_url, unique_name, "t", {f"new-{i}": 1 for i in range(8)})
    out, _ = await asyncio.to_thread(replay.proc.communicate, timeout=60)
    assert sorted(e["actor_id"] for e in map(json.loads, out.splitlines())) == [f"old-{i}" for i in range(6)]
    out, _ = await asyncio.to_thread(follow.proc.communicate, timeout=60)
    assert follow.proc.returncode == 0
    assert sorted(e["actor_id"] for e in map(json.loads, out.splitlines())) == [f"new-{i}" for i in range(8)]


async def test_rebalance_command_and_cluster_placement(nats_cluster_factory: Callable[..., NatsCluster]) -> None:
    cluster = nats_cluster_factory(3)
    nc = await nats.connect(servers=cluster.urls)
    api = JsApi(nc)
    try:
        for _ in range(150):
            try:
                store = await JetStreamEventStore.create(nc, "cli", namespace="n", replicas=3, partitions=6,
                                                         timeout=2.0)
                break
            except AetherError:
                await asyncio.sleep(0.2)
        target = cluster.servers[1].server_name
        assert target is not None
        await bunch_leaders(store, api, target)
        env = {"AETHER_NATS_URL": ",".join(cluster.urls), "AETHER_STREAM": "cli"}
        result = await asyncio.to_thread(invoke, "events", "rebalance", "--all", "--json", "--timeout", "60",
                                         env=env)
        assert result.exit_code == 0, result.stderr
        rows = json.loads(result.stdout)
        assert len(rows) == 1 and rows[0]["moved"] >= 3
        assert sorted(Counter(p["leader"] for p in rows[0]["placement"]).values()) == [2, 2, 2]
        placement: list[dict[str, Any]] = await stream_placement(nc, "cli")
        assert len(placement) == 1 and placement[0]["partitions"] == 6
        assert sorted(Counter(placement[0]["leaders"]).values()) == [2, 2, 2]
        console = Console(record=True, width=200)
        render_placement(console, placement)
        text = console.export_text()
        assert "leaders per server" in text and all(f"{s.server_name}: 2" in text for s in cluster.servers)
        stats = await asyncio.to_thread(invoke, "events", "stats", "--namespace", "n", "--json", env=env)
        assert stats.exit_code == 0, stats.stderr
        assert len({p["leader"] for p in json.loads(stats.stdout)["placement"]}) == 3
    finally:
        await api.aclose()
        await nc.close()


async def test_dashboard_groups_partitions_and_sums_projection_lag(nats_url: str, unique_name: str) -> None:
    from aether.dashboard.streams import list_streams as all_streams
    from aether.dashboard.streams import read_projections, read_streams
    from aether.projection import Projection, ProjectionRunner

    await seed(nats_url, unique_name, "dash", {f"acct-{i}": 3 for i in range(9)})
    nc = await nats.connect(nats_url)
    api = JsApi(nc)
    try:
        store = await JetStreamEventStore.create(nc, unique_name, namespace="dash")
        projection = Projection("dash-view", {"Deposited": _noop})
        async with ProjectionRunner(nc, projection, store) as runner:
            await runner.catch_up(timeout=60)
        await store.save_events([Event("Deposited", "acct-0", v, {"amount": v}) for v in (4, 5)])
        infos = await all_streams(api)
        mine = [v for v in read_streams(infos) if v.base == unique_name and v.namespace == "dash"]
        assert sorted((v.name, v.partition) for v in mine) == [(name, i) for i, name in enumerate(store.streams)]
        views = [p for p in await read_projections(api, infos, mine) if p.name == "dash-view"]
        assert len(views) == 1 and views[0].stream == store.stream and views[0].lag == 2
    finally:
        await api.aclose()
        await nc.close()


async def _noop(event: Event, position: int) -> None:
    return None
