"""Three node processes: one leader, leader failover with a higher term, a paused leader steps
down and never acts with its old term, a killed member's shards move to the survivors and come
back (capped) when it rejoins."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from _cluster_procs import NodeSet, statuses
from aether.cluster import ClusterClient
from aether.cluster.options import ClusterOptions
from aether.testing import wait_for

pytestmark = pytest.mark.anyio

NODES = ["n1", "n2", "n3"]
SHARDS = 64
CAP = 8  # the default max_moves_per_round


async def settled(nc: Client, cluster: str, nodes: list[str]) -> dict[str, dict[str, Any]] | None:
    """Statuses when every node answers, agrees on one leader, and the shards are exactly covered."""
    found = await statuses(nc, cluster, nodes)
    if any(s is None for s in found.values()):
        return None
    ready: dict[str, dict[str, Any]] = {n: s for n, s in found.items() if s is not None}
    leaders = [n for n, s in ready.items() if s["is_leader"]]
    if len(leaders) != 1 or any(s["leader_id"] != leaders[0] for s in ready.values()):
        return None
    owned = [shard for s in ready.values() for shard in s["owned"]]
    if sorted(owned) != list(range(SHARDS)):
        return None
    if len({s["map_version"] for s in ready.values()}) != 1:
        return None
    return ready


def leader_of(found: dict[str, dict[str, Any]]) -> tuple[str, int]:
    (leader,) = [n for n, s in found.items() if s["is_leader"]]
    return leader, int(found[leader]["term"])


async def test_exactly_one_leader_and_failover_to_higher_term(nc: Client, nats_url: str, unique_name: str,
                                                              tmp_path: Path) -> None:
    cluster = unique_name.replace(".", "-")[:40]
    with NodeSet(nats_url, cluster, tmp_path) as nodes:
        for n in NODES:
            nodes.start(n)
        found = await wait_for(lambda: settled(nc, cluster, NODES), message="one leader, all shards owned",
                               diagnostics=nodes.diagnostics)
        leader, term = leader_of(found)
        assert sum(1 for s in found.values() if s["is_leader"]) == 1

        nodes.nodes[leader].kill()
        survivors = [n for n in NODES if n != leader]
        found = await wait_for(lambda: settled(nc, cluster, survivors), message="a new leader after SIGKILL",
                               diagnostics=nodes.diagnostics)
        new_leader, new_term = leader_of(found)
        assert new_leader != leader
        assert new_term > term, "the fencing term strictly increases with every new leadership"
        assert all(s["term"] == new_term for s in found.values())


async def test_paused_leader_steps_down_and_never_acts_with_old_term(nc: Client, nats_url: str, unique_name: str,
                                                                    tmp_path: Path) -> None:
    cluster = unique_name.replace(".", "-")[:40]
    with NodeSet(nats_url, cluster, tmp_path) as nodes:
        for n in NODES:
            nodes.start(n)
        found = await wait_for(lambda: settled(nc, cluster, NODES), message="one leader",
                               diagnostics=nodes.diagnostics)
        leader, old_term = leader_of(found)
        others = [n for n in NODES if n != leader]

        nodes.nodes[leader].pause()
        found = await wait_for(lambda: settled(nc, cluster, others), message="a new leader while paused",
                               diagnostics=nodes.diagnostics)
        _, new_term = leader_of(found)
        assert new_term > old_term
        resumed_at = time.time()
        nodes.nodes[leader].resume()

        async def old_leader_stepped_down() -> dict[str, Any] | None:
            s = (await statuses(nc, cluster, [leader]))[leader]
            return s if s is not None and not s["is_leader"] and s["term"] >= new_term else None

        await wait_for(old_leader_stepped_down, message="the resumed leader to report it follows",
                       diagnostics=nodes.diagnostics)
        await wait_for(lambda: settled(nc, cluster, NODES), message="the resumed node to rejoin",
                       diagnostics=nodes.diagnostics)
        events = nodes.nodes[leader].events()
        acted = [e for e in events if e["event"] == "map_publish" and e["t"] >= resumed_at and e["term"] <= old_term]
        assert not acted, f"the old leader acted with its old term after resuming: {acted}"
        deposed = [e for e in events if e["event"] == "deposed"]
        assert deposed and deposed[-1]["term"] == old_term
        assert deposed[-1]["t"] >= resumed_at, "it stepped down by its own deadline once it ran again"
        elected_old = [e for e in events if e["event"] == "elected" and e["term"] == old_term]
        assert len(elected_old) == 1


async def test_killed_member_shards_fail_over_and_move_back_within_cap(nc: Client, nats_url: str, unique_name: str,
                                                                       tmp_path: Path) -> None:
    cluster = unique_name.replace(".", "-")[:40]
    actors = [f"actor-{i}" for i in range(60)]
    with NodeSet(nats_url, cluster, tmp_path) as nodes:
        for n in NODES:
            nodes.start(n)
        found = await wait_for(lambda: settled(nc, cluster, NODES), message="a settled cluster",
                               diagnostics=nodes.diagnostics)
        leader, _ = leader_of(found)
        victim = next(n for n in NODES if n != leader and found[n]["owned"])
        victim_shards = set(found[victim]["owned"])
        async with ClusterClient(nc, cluster=cluster) as client:
            await client.wait_ready()
            victims_actors = [a for a in actors if client.owner_of(a) == victim]
            assert victims_actors, "some test actors live on the victim"

            nodes.nodes[victim].kill()
            survivors = [n for n in NODES if n != victim]
            found = await wait_for(lambda: settled(nc, cluster, survivors),
                                   message="survivors to own every shard exactly once", diagnostics=nodes.diagnostics)
            for shard in victim_shards:
                assert sum(shard in s["owned"] for s in found.values()) == 1
            for actor in victims_actors:
                reply = await client.request(actor, b"ping", timeout=10)
                assert reply.split(b":", 1)[0].decode() in survivors

            map_before_rejoin = max(s["map_version"] for s in found.values())
            nodes.start(victim)

            # placement is balanced and sticky: the rejoined node gets its share back (shards shed
            # by the survivors above their cap, mostly the very shards it had), nothing else moves
            fair = ClusterOptions().shard_count // len(NODES) - 1

            async def victim_back() -> dict[str, dict[str, Any]] | None:
                done = await settled(nc, cluster, NODES)
                return done if done is not None and len(done[victim]["owned"]) >= fair else None

            back = await wait_for(victim_back, message="the rejoined node to get its shards back",
                                  diagnostics=nodes.diagnostics)
            assert set(back[victim]["owned"]) & victim_shards, "it gets shards it had before"
            for actor in actors:
                owner = client.owner_of(actor)
                assert (await client.request(actor, b"ping", timeout=10)).startswith(f"{owner}:".encode())

        published = [e for n in NODES for e in nodes.nodes[n].events()
                     if e["event"] == "map_publish" and e["version"] > map_before_rejoin]
        assert published
        previous: list[str] | None = None
        for event in sorted(published, key=lambda e: e["version"]):
            assert len(event["handoffs"]) <= CAP, "at most max_moves_per_round shards move at once"
            if previous is not None:
                taken = [s for s, (a, b) in enumerate(zip(previous, event["owners"], strict=True))
                         if a and a != victim and a != b]
                assert len(taken) <= CAP
                assert all(event["owners"][s] == victim for s in taken), "shards move back only to the rejoined node"
            previous = event["owners"]
