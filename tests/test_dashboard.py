"""``aether dashboard``: its state agrees with ``aether cluster status --json``, it works under the
least-privilege dashboard role, it only reads, and its parts behave on their own."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from click.testing import CliRunner
from nats.aio.client import Client

from _dashboard_procs import AetherProc, fetch_json, start_dashboard, start_node
from aether import Event
from aether.cli import cli
from aether.cluster import ClusterManager
from aether.cluster.state import ClusterState, MemberState
from aether.cluster.types import ShardMap
from aether.connect import connect as aether_connect  # composes the permission watch (plain nats.connect: timeouts)
from aether.dashboard import Collector, diff_events
from aether.dashboard.collector import _appends_from_metrics
from aether.dashboard.streams import read_streams, stream_view
from aether.errors import InvalidInputError, InvalidNameError
from aether.permissions import authorization_config, dashboard_permissions
from aether.projection import Projection, ProjectionOptions, ProjectionRunner, RetryPolicy
from aether.store import JetStreamEventStore
from aether.testing import NatsServer
from aether.testing.waiting import wait_for

pytestmark = pytest.mark.anyio

STABLE_MEMBER_FIELDS = ("id", "address", "status", "started_at", "incarnation", "weight", "shards", "metadata",
                        "in_map", "reachable")


@pytest.fixture
def started() -> Iterator[list[AetherProc]]:
    procs: list[AetherProc] = []
    yield procs
    for proc in procs:
        proc.close()


def cluster_status(nats_url: str, cluster: str, *extra: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["cluster", "status", "--cluster", cluster, "--json", "--nats-url", nats_url,
                                      *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    state: dict[str, Any] = json.loads(result.stdout)
    return state


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    """The parts of a cluster state that do not change while a cluster is idle."""
    return {"cluster": state["cluster"], "leader": state["leader"], "map": state["map"],
            "shards_per_node": state["shards_per_node"],
            "members": [{k: m[k] for k in STABLE_MEMBER_FIELDS} for m in state["members"]]}


# ---- against real `aether node` processes --------------------------------------------------------------
async def test_api_state_agrees_with_cluster_status(nats_url: str, unique_name: str, tmp_path: Path,
                                                     started: list[AetherProc]) -> None:
    cluster = unique_name[:40]
    for node_id in ("n1", "n2"):
        proc, _ = await asyncio.to_thread(start_node, node_id, nats_url, cluster, unique_name, tmp_path)
        started.append(proc)
    dashboard, url = await asyncio.to_thread(start_dashboard, nats_url, cluster, tmp_path)
    started.append(dashboard)

    def settled() -> dict[str, Any] | None:
        state = cluster_status(nats_url, cluster)
        spread = state["shards_per_node"]
        ok = set(spread) == {"n1", "n2"} and sum(spread.values()) == 64 and state["map"]["handoffs"] == 0 \
            and all(m["reachable"] and m["in_map"] for m in state["members"])
        return state if ok else None

    await asyncio.to_thread(wait_for_sync, settled)

    def agree() -> tuple[dict[str, Any], dict[str, Any]] | None:
        api = fetch_json(url + "api/state")
        status = cluster_status(nats_url, cluster)
        return (api, status) if api["cluster"] and comparable(api["cluster"]) == comparable(status) else None

    api, status = await asyncio.to_thread(wait_for_sync, agree)
    assert api["cluster"]["leader"]["id"] in ("n1", "n2")
    # the grid is the published map: its owners add up to the shards per node
    owners = api["shard_map"]["owners"]
    assert len(owners) == 64 and api["shard_map"]["version"] == status["map"]["version"]
    assert {n: owners.count(n) for n in set(owners)} == status["shards_per_node"]
    assert set(api["nodes"]) == {"n1", "n2"}
    assert all(n["uptime_seconds"] >= 0 and n["metrics_url"] for n in api["nodes"].values())
    assert unique_name in [s["name"] for s in api["streams"]]
    assert api["events"] and api["events"][-1]["kind"] == "watch"
    assert api["problems"] == []

    # the live feed: server-sent events carrying the same state
    event = await asyncio.to_thread(read_sse_event, url + "api/events")
    assert event["cluster_name"] == cluster and {m["id"] for m in event["cluster"]["members"]} == {"n1", "n2"}
    page = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    assert 'id="shard-grid"' in page and "/static/dashboard.js" in page
    script = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "static/dashboard.js", timeout=10).read())
    assert b"EventSource" in script

    # a graceful stop is a leave, not a failure
    assert await asyncio.to_thread(started[1].stop) == 0

    def left() -> list[dict[str, Any]] | None:
        events = [e for e in fetch_json(url + "api/state")["events"] if e["node"] == "n2"]
        return events if any(e["kind"] == "leave" for e in events) else None

    events = await asyncio.to_thread(wait_for_sync, left)
    assert not any(e["kind"] == "failure" for e in events)
    assert await asyncio.to_thread(dashboard.stop) == 0


def wait_for_sync(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def read_sse_event(url: str) -> dict[str, Any]:
    """The first server-sent event of ``url``, decoded."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        data = b""
        for raw in response:
            line = raw.rstrip(b"\r\n")
            if line.startswith(b"data: "):
                data += line[6:]
            elif not line and data:
                parsed: dict[str, Any] = json.loads(data)
                return parsed
    raise AssertionError("the event stream ended")


# ---- least privilege ------------------------------------------------------------------------------------
class Violations:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            self.seen.append(str(exc))


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        await client.close()


async def test_dashboard_role_is_enough(nats_server_factory: Callable[..., NatsServer], unique_name: str,
                                        tmp_path: Path, clients: list[Client], started: list[AetherProc]) -> None:
    cluster, stream = "shop", unique_name[:30]
    dash_perms = dashboard_permissions(cluster, inbox_prefix="_INBOX", event_streams=[stream], lease_ttls=[10])
    server = nats_server_factory(extra_config=authorization_config([
        {"user": "admin", "password": "admin-pw"},
        {"user": "dash", "password": "dash-pw", "permissions": dash_perms}]))
    admin = await nats.connect(server.url, user="admin", password="admin-pw")
    clients.append(admin)
    violations = Violations()
    dash = await aether_connect(server.url, user="dash", password="dash-pw", error_cb=violations.record)
    clients.append(dash)

    # a cluster node, a stream with events, a projection with one dead letter and a lease
    store = await JetStreamEventStore.create(admin, stream)
    await store.save_events([Event("Deposited", "acct-1", v, {"amount": v}) for v in range(1, 6)])
    projection = Projection("balances")

    @projection.on("Deposited")
    async def deposited(event: Event, position: int) -> None:
        if event.version == 3:
            raise RuntimeError("poison")

    options = ProjectionOptions(retry=RetryPolicy(max_attempts=1), checkpoint_every=1, checkpoint_interval=0.1)
    async with (ClusterManager(admin, node_id="n1", cluster=cluster) as node,
                ProjectionRunner(admin, projection, store, options=options, node_id="n1") as runner):
        await node.wait_ready(timeout=30)
        await runner.wait_until(5, timeout=30)

        collector = Collector(dash, cluster, interval=0.2)
        try:
            await collector.start()

            seen: list[dict[str, Any]] = []

            async def complete() -> bool:
                seen.append(await collector.refresh())
                projections = seen[-1]["projections"]
                return bool(projections) and projections[0]["position"] == 5

            await wait_for(complete, timeout=30, message="the projection's checkpoint")
            snapshot = seen[-1]
        finally:
            await collector.aclose()
        assert snapshot["problems"] == []
        assert snapshot["cluster"]["leader"]["id"] == "n1"
        assert [m["id"] for m in snapshot["cluster"]["members"]] == ["n1"]
        assert snapshot["cluster"]["members"][0]["reachable"] is True
        assert snapshot["shard_map"]["owners"] == ["n1"] * 64
        [row] = [s for s in snapshot["streams"] if s["name"] == stream]
        assert row["messages"] == 5 and row["namespace"] is None and row["last_seq"] == 5
        [proj] = snapshot["projections"]
        assert proj == {**proj, "name": "balances", "stream": stream, "position": 5, "lag": 0, "dead_letters": 1,
                        "holder": "n1", "saved_by": "n1"}

        # the command works under the same user
        dashboard, url = await asyncio.to_thread(start_dashboard, server.url, cluster, tmp_path, "--user", "dash",
                                                 "--password", "dash-pw")
        started.append(dashboard)
        state = await asyncio.to_thread(fetch_json, url + "api/state")
        assert state["problems"] == [] and state["cluster"]["leader"]["id"] == "n1"
        assert await asyncio.to_thread(dashboard.stop) == 0
    assert violations.seen == []


async def test_dashboard_reports_what_it_may_not_read(nats_server_factory: Callable[..., NatsServer],
                                                      clients: list[Client]) -> None:
    """A user without the stream listing still sees the cluster; the rest is named as a problem."""
    perms = dashboard_permissions("shop", inbox_prefix="_INBOX")
    perms["publish"]["allow"].remove("$JS.API.STREAM.LIST")
    server = nats_server_factory(extra_config=authorization_config([
        {"user": "admin", "password": "admin-pw"}, {"user": "dash", "password": "dash-pw", "permissions": perms}]))
    admin = await nats.connect(server.url, user="admin", password="admin-pw")
    dash = await aether_connect(server.url, user="dash", password="dash-pw", error_cb=Violations().record)
    clients.extend([admin, dash])
    async with ClusterManager(admin, node_id="n1", cluster="shop") as node:
        await node.wait_ready(timeout=30)
        collector = Collector(dash, "shop")
        try:
            snapshot = await collector.refresh()
        finally:
            await collector.aclose()
    assert snapshot["cluster"]["leader"]["id"] == "n1"
    assert snapshot["streams"] == [] and len(snapshot["problems"]) == 1
    assert snapshot["problems"][0].startswith("streams:") and "permission" in snapshot["problems"][0].lower()


async def test_missing_cluster_is_a_problem_not_a_crash(nc: Client) -> None:
    collector = Collector(nc, "no-such-cluster-here")
    try:
        snapshot = await collector.refresh()
    finally:
        await collector.aclose()
    assert snapshot["cluster"] is None and snapshot["shard_map"] is None
    assert any("does not exist" in p for p in snapshot["problems"])


# ---- the parts on their own -------------------------------------------------------------------------------
def _member(node_id: str, incarnation: str = "i1", status: str = "up", reachable: bool | None = True) -> MemberState:
    return MemberState(id=node_id, address=f"{node_id}:1", status=status, started_at=datetime.now(UTC),
                       incarnation=incarnation, weight=1, shards=0, in_flight=0, requests=0, event_loop_lag=0.0,
                       metadata={}, in_map=True, reachable=reachable)


def _state(members: list[MemberState], leader: str | None, term: int, owners: list[str], version: int) -> ClusterState:
    state = ClusterState("c", leader_id=leader, term=term, map_version=version, members=members)
    state.shard_map = ShardMap(version=version, term=term, shard_count=len(owners), owners=tuple(owners))
    return state


def test_events_explain_the_change() -> None:
    first = _state([_member("a"), _member("b"), _member("c", status="up")], "a", 5, ["a", "b", "c", "a"], 3)
    [watch] = diff_events(None, first)
    assert watch.kind == "watch" and "3 members" in watch.text and "leader a (term 5)" in watch.text
    assert diff_events(first, first) == []
    second = _state([_member("b"), _member("c", status="leaving"), _member("d")], "b", 9, ["b", "b", "c", "d"], 4)
    kinds = {(e.kind, e.node) for e in diff_events(first, second)}
    assert kinds == {("join", "d"), ("leaving", "c"), ("failure", "a"), ("leader", "b"), ("shards", None)}
    shards = next(e for e in diff_events(first, second) if e.kind == "shards")
    assert shards.text == "shard map v4: 2 shards moved"
    third = _state([_member("b", incarnation="i2"), _member("d", reachable=False)], None, 9, ["b", "b", "b", "d"], 4)
    kinds = {(e.kind, e.node) for e in diff_events(second, third)}
    assert kinds == {("restart", "b"), ("leave", "c"), ("unreachable", "d"), ("leader", "b")}
    assert any(e.text == "no leader (was b)" for e in diff_events(second, third))
    # the reason written with a tombstone wins over the last status seen
    fourth = _state([_member("d", reachable=False)], None, 9, ["d", "d", "d", "d"], 5)
    kinds = {(e.kind, e.node) for e in diff_events(third, fourth, {"b": "leave"})}
    assert ("leave", "b") in kinds
    kinds = {(e.kind, e.node) for e in diff_events(second, third, {"c": "failed"})}
    assert ("failure", "c") in kinds and ("leave", "c") not in kinds


def _info(name: str, subjects: list[str], metadata: dict[str, str] | None = None, messages: int = 3) -> dict[str, Any]:
    return {"config": {"name": name, "subjects": subjects, "num_replicas": 3, "metadata": metadata or {}},
            "state": {"messages": messages, "bytes": 100, "first_seq": 1, "last_seq": messages, "consumer_count": 0},
            "cluster": {"leader": "s1", "replicas": [{"name": "s2", "current": True}]}}


def test_streams_are_recognised_and_grouped() -> None:
    infos = [
        _info("orders", ["aether.orders.>"]),
        _info("orders__tenant-a", ["aether.orders__tenant-a.>"]),
        _info("orders__a_2Eb", ["aether.orders__a_2Eb.>"]),
        _info("orders__tenant-b___p0", ["aether.orders__tenant-b___p0.>"]),
        _info("orders__tenant-b___p1", ["aether.orders__tenant-b___p1.>"]),
        _info("orders___p0", ["aether.orders___p0.>"], {"aether_partitions": "2", "aether_partition": "0"}),
        _info("custom", ["aether.custom.>"], {"aether.stream": "orders", "aether.namespace": "t.c",
                                              "aether.partition": "2"}),
        _info("__DLQ_orders", ["aether.__dlq.orders.*"]),
        _info("KV_aether-cluster-x", ["$KV.aether-cluster-x.>"]),
        _info("other", ["foo.>", "bar.>"]),
        _info("mismatch", ["aether.elsewhere.>"]),
    ]
    views = {v.name: v for v in read_streams(infos)}
    assert set(views) == {"orders", "orders__tenant-a", "orders__a_2Eb", "orders__tenant-b___p0",
                          "orders__tenant-b___p1", "orders___p0", "custom"}
    assert (views["orders"].base, views["orders"].namespace, views["orders"].partition) == ("orders", None, None)
    assert views["orders__tenant-a"].namespace == "tenant-a"
    assert views["orders__a_2Eb"].namespace == "a.b"
    assert (views["orders__tenant-b___p1"].namespace, views["orders__tenant-b___p1"].partition) == ("tenant-b", 1)
    assert (views["orders___p0"].base, views["orders___p0"].namespace, views["orders___p0"].partition) == (
        "orders", None, 0)
    assert (views["custom"].base, views["custom"].namespace, views["custom"].partition) == ("orders", "t.c", 2)
    assert views["orders"].leader == "s1" and views["orders"].replicas_current == ["s2"]
    assert stream_view({"config": {}}) is None


def test_append_count_is_read_from_metrics_text() -> None:
    text = ("# HELP aether_store_appends_total Successful append calls.\n# TYPE aether_store_appends_total counter\n"
            'aether_store_appends_total{namespace=""} 7.0\naether_store_appends_total{namespace="b"} 3.0\n'
            'aether_store_appends_created{namespace=""} 1.7e9\naether_store_appended_events_total 99.0\n')
    assert _appends_from_metrics(text) == 10.0
    assert _appends_from_metrics("nothing here\n") is None


async def test_bad_input(nc: Client) -> None:
    with pytest.raises(InvalidNameError):
        Collector(nc, "bad name")
    with pytest.raises(InvalidInputError):
        Collector(nc, "ok", interval=0)
    with pytest.raises(InvalidNameError):
        dashboard_permissions("bad name", inbox_prefix="_INBOX")
    with pytest.raises(InvalidNameError):
        dashboard_permissions("ok", inbox_prefix="_INBOX", event_streams=["a.b"])
    with pytest.raises(InvalidInputError):
        dashboard_permissions("ok", inbox_prefix="_INBOX", lease_ttls=[0])
    with pytest.raises(InvalidInputError):
        dashboard_permissions("ok", inbox_prefix="_INBOX", event_streams="orders")


def test_command_line_errors(nats_url: str) -> None:
    runner = CliRunner()
    bad = runner.invoke(cli, ["dashboard", "--cluster", "bad name", "--nats-url", nats_url, "--port", "0"])
    assert bad.exit_code == 2 and "cluster" in bad.stderr and "Traceback" not in bad.stderr
    busy = runner.invoke(cli, ["dashboard", "--host", "203.0.113.1", "--port", "0", "--nats-url", nats_url])
    assert busy.exit_code == 2 and "cannot listen" in busy.stderr
    assert "dashboard" in runner.invoke(cli, ["--help"]).stdout
    usage = runner.invoke(cli, ["dashboard", "--help"])
    assert usage.exit_code == 0 and "/api/state" in usage.stdout


def test_dashboard_permissions_are_reads_only() -> None:
    perms = dashboard_permissions("shop", inbox_prefix="_INBOX_d", event_streams=["orders", "orders__t"],
                                  lease_ttls=[10, 30])
    publish = perms["publish"]["allow"]
    assert "allow_responses" not in perms
    assert all(".CREATE." not in s and ".UPDATE." not in s and ".DELETE." not in s and ".PURGE." not in s
               and not s.startswith("$KV.") for s in publish)
    assert "$JS.API.DIRECT.GET.KV_aether-projection-leases-30s" in publish
    assert "$JS.API.STREAM.INFO.__DLQ_orders__t" in publish
    assert perms["subscribe"]["allow"][-1] == "_INBOX_d.>"

