"""Single writer under failures: requests against 200 actors, each appending one event through
the owning node, while nodes (or a NATS server) are killed and restarted. Afterwards every
history is gapless, has no duplicate versions, holds each request at most once, and every
acknowledged request's event is there."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from _cluster_procs import NodeSet, statuses
from _fault_artifacts import write_json
from aether.cluster import ClusterClient
from aether.errors import AetherError
from aether.store import JetStreamEventStore
from aether.testing import NatsCluster, wait_for
from test_durability import _read_when_available

pytestmark = pytest.mark.anyio

NODES = ["n1", "n2", "n3"]
ACTORS = [f"account-{i}" for i in range(200)]
WORKERS = 25


class Workload:
    """WORKERS tasks; each drives its own actors one request at a time (so retries stay in order)."""

    def __init__(self, client: ClusterClient) -> None:
        self.client = client
        self.stop = asyncio.Event()
        self.acked: dict[str, list[tuple[str, int]]] = defaultdict(list)  # actor -> (payload, version)
        self.ack_times: list[float] = []
        self.failures = 0
        self._seq = itertools.count()

    async def _worker(self, actors: list[str]) -> None:
        while not self.stop.is_set():
            for actor in actors:
                if self.stop.is_set():
                    return
                payload = f"req-{next(self._seq)}"
                try:
                    reply = await self.client.request(actor, payload.encode(), timeout=8.0)
                except AetherError:
                    self.failures += 1
                    continue
                self.acked[actor].append((payload, int(reply)))
                self.ack_times.append(time.monotonic())

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._worker(ACTORS[i::WORKERS])) for i in range(WORKERS)]

    def acked_after(self, moment: float) -> int:
        return sum(1 for t in self.ack_times if t > moment)

    def summary(self, since: float) -> str:
        times = sorted(t for t in self.ack_times if t > since)
        stall = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
        return (f"{sum(len(v) for v in self.acked.values())} acknowledged, {self.failures} failed, "
                f"longest pause between acknowledgements after the fault {stall:.2f}s")

    async def verify(self, store: JetStreamEventStore) -> int:
        total = 0
        for actor in ACTORS:
            events = await _read_when_available(store, actor)
            versions = [e.version for e in events]
            assert versions == list(range(1, len(events) + 1)), f"{actor}: history not gapless/unique: {versions}"
            payloads = [e.data["payload"] for e in events]
            assert len(set(payloads)) == len(payloads), f"{actor}: a request was appended twice"
            by_version = dict(zip(versions, payloads, strict=True))
            for payload, version in self.acked[actor]:
                assert by_version.get(version) == payload, f"{actor}: acknowledged {payload}@{version} lost"
            total += len(events)
        return total


async def settled(nc: Client, cluster: str, nodes: list[str]) -> dict[str, Any] | None:
    found = await statuses(nc, cluster, nodes)
    if any(s is None or not s["alive"] for s in found.values()):
        return None
    owned = sorted(shard for s in found.values() if s is not None for shard in s["owned"])
    leaders = [n for n, s in found.items() if s is not None and s["is_leader"]]
    return found if owned == list(range(64)) and len(leaders) == 1 else None


async def test_single_writer_while_nodes_are_killed_and_restarted(nc: Client, nats_url: str, unique_name: str,
                                                                  tmp_path: Path) -> None:
    cluster = unique_name.replace(".", "-")[:40]
    stream = f"SW{abs(hash(unique_name)) % 10**8}"
    store = await JetStreamEventStore.create(nc, stream)
    with NodeSet(nats_url, cluster, tmp_path, stream=stream) as nodes:
        for n in NODES:
            nodes.start(n)
        found = await wait_for(lambda: settled(nc, cluster, NODES), message="a settled cluster",
                               diagnostics=nodes.diagnostics)
        leader = next(n for n, s in found.items() if s["is_leader"])
        follower = next(n for n in NODES if n != leader)
        async with ClusterClient(nc, cluster=cluster) as client:
            await client.wait_ready()
            work = Workload(client)
            tasks = work.start()
            try:
                await wait_for(lambda: len(work.ack_times) >= 200, message="requests before faults")
                # fault 1: SIGKILL a follower, restart it
                nodes.nodes[follower].kill()
                killed = time.monotonic()
                await wait_for(lambda: work.acked_after(killed + 0.5) >= 100, timeout=60,
                               message="requests after killing a follower", diagnostics=nodes.diagnostics)
                nodes.start(follower)
                # fault 2: SIGKILL the leader, restart it
                await wait_for(lambda: settled(nc, cluster, NODES), message="the follower to rejoin",
                               diagnostics=nodes.diagnostics)
                nodes.nodes[leader].kill()
                killed = leader_killed = time.monotonic()
                await wait_for(lambda: work.acked_after(killed + 0.5) >= 100, timeout=60,
                               message="requests after killing the leader", diagnostics=nodes.diagnostics)
                nodes.start(leader)
                await wait_for(lambda: settled(nc, cluster, NODES), message="the old leader to rejoin",
                               diagnostics=nodes.diagnostics)
                restarted = time.monotonic()
                await wait_for(lambda: work.acked_after(restarted) >= 100, timeout=60,
                               message="requests after the restarts")
            finally:
                work.stop.set()
                await asyncio.gather(*tasks)
        print(f"\nsingle writer, leader killed: {work.summary(leader_killed)}")
        total = await work.verify(store)
        acked = sum(len(v) for v in work.acked.values())
        assert acked >= 500 and total >= acked
        await store.aclose()


async def _r3_store(nc: Client, name: str) -> JetStreamEventStore:
    for _ in range(150):  # the meta leader may still be settling right after the cluster starts
        try:
            return await JetStreamEventStore.create(nc, name, replicas=3, timeout=2.0)
        except AetherError:
            await asyncio.sleep(0.2)
    raise AssertionError("could not create an R3 stream")


async def test_nats_server_killed_during_workload(nats_cluster_factory: Callable[..., NatsCluster],
                                                  unique_name: str, tmp_path: Path,
                                                  request: pytest.FixtureRequest) -> None:
    nats_cluster = nats_cluster_factory(3)
    urls = nats_cluster.urls
    cluster = "r3-" + unique_name.replace(".", "-")[:30]
    stream = "SWR3"
    nc = await nats.connect(servers=urls, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        store = await _r3_store(nc, stream)

        def rotated(i: int) -> str:  # node i connects to server i first
            return ",".join(urls[i:] + urls[:i])

        with NodeSet(urls[0], cluster, tmp_path, stream=stream, replicas=3, urls_for=rotated) as nodes:
            for i, n in enumerate(NODES):
                nodes.start(n, index=i)
            await wait_for(lambda: settled(nc, cluster, NODES), timeout=60, message="a settled cluster on R3",
                           diagnostics=nodes.diagnostics)
            async with ClusterClient(nc, cluster=cluster) as client:
                await client.wait_ready()
                work = Workload(client)
                tasks = work.start()
                try:
                    await wait_for(lambda: len(work.ack_times) >= 200, message="requests before the fault")
                    info = await store.stream_info()
                    # kill the server leading the KV bucket's stream: the hardest one to lose
                    bucket_info = await nc.request("$JS.API.STREAM.INFO.KV_aether-cluster-" + cluster, b"",
                                                   timeout=5)
                    leader_name = _json(bucket_info.data).get("cluster", {}).get("leader") or \
                        info["cluster"]["leader"]
                    victim = next(s for s in nats_cluster.servers if s.server_name == leader_name)
                    await victim.kill()
                    killed = time.monotonic()
                    await wait_for(lambda: work.acked_after(killed + 1.0) >= 200, timeout=90,
                                   message="requests after a NATS server was killed", diagnostics=nodes.diagnostics)
                finally:
                    work.stop.set()
                    await asyncio.gather(*tasks)
            print(f"\nsingle writer, NATS server {leader_name} killed: {work.summary(killed)}")
            try:
                total = await work.verify(store)
            except AssertionError:
                write_json(request.node.nodeid, "writer-view.json", {
                    "killed": leader_name, "acked": work.acked, "failures": work.failures,
                    "read": {a: [[e.version, e.id, e.data.get("payload")] for e in await _read_when_available(store, a)]
                             for a in ACTORS}})
                raise
            assert total >= sum(len(v) for v in work.acked.values()) >= 400
        await store.aclose()
    finally:
        await nc.close()


def _json(data: bytes) -> dict[str, Any]:
    import json

    value: dict[str, Any] = json.loads(data)
    return value
