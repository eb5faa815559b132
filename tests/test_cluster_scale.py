"""Clusters of 9 and 17 real ``aether node`` processes on one machine (issue 17): they form with
every node owning its balanced share, and after SIGKILL of a member and then of the leader the
survivors serve every shard exactly once, balanced again — without flapping: no live node is
evicted, and a member's death does not change the leader.

Marked ``slow`` (about a minute under load); ``make test`` (CI) runs it, ``make test-fast`` skips it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nats
import pytest

from aether.connect import close
from aether.testing import NatsServer
from aether.testing.fleet import NodeFleet, balance_of

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SHARDS = 64


def flaps(fleet: NodeFleet) -> list[str]:
    """Log lines showing that a live node was evicted or a leader lost its lease while running."""
    found = []
    for node_id, proc in fleet.nodes.items():
        text = proc.log_file.read_text(errors="replace") if proc.log_file.exists() else ""
        found += [f"{node_id}: {line}" for line in text.splitlines() if "rejoining as a new incarnation" in line]
    return found


@pytest.mark.parametrize("size", [9, 17])
async def test_nodes_form_balanced_and_fail_over_balanced(size: int, nats_server_factory: Callable[..., NatsServer],
                                                          unique_name: str, tmp_path: Path) -> None:
    server = nats_server_factory()
    nc = await nats.connect(server.url)
    fleet = NodeFleet(server.url, cluster=unique_name.replace(".", "-")[:40], work_dir=tmp_path, shard_count=SHARDS)
    try:
        fleet.start(size)
        view = await fleet.wait_balanced(nc, timeout=120)
        assert sorted(view.counts.values()) == sorted([SHARDS // size + 1] * (SHARDS % size)
                                                      + [SHARDS // size] * (size - SHARDS % size))
        assert view.overlap == 0 and len(view.leaders) == 1
        leader = view.leaders[0]
        term = (await fleet.status(nc, leader) or {})["term"]

        victim = next(n for n in sorted(view.counts) if n != leader)
        fleet.kill(victim)
        view = await fleet.wait_balanced(nc, timeout=60)
        assert victim not in view.counts and len(view.counts) == size - 1
        assert min(view.counts.values()) >= SHARDS // (size - 1)
        assert max(view.counts.values()) <= -(-SHARDS // (size - 1))
        assert view.leaders == [leader], "a member's death does not move the leadership"
        assert (await fleet.status(nc, leader) or {})["term"] == term

        fleet.kill(leader)
        view = await fleet.wait_balanced(nc, timeout=60)
        assert len(view.counts) == size - 2 and leader not in view.counts and view.leaders != [leader]
        new_term = (await fleet.status(nc, view.leaders[0]) or {})["term"]
        assert new_term > term, "the new leadership has a higher fencing term"
        final = balance_of(await fleet.statuses(nc), SHARDS)
        assert final.balanced and final.overlap == 0
        assert not flaps(fleet), "\n".join(flaps(fleet))
    finally:
        fleet.kill_all()
        await close(nc)
