"""A 3-node sharded cluster hosting bank accounts, with a graceful leave and shard handoff.

Run it as-is (an embedded NATS server is started when no URL is given)::

    python examples/sharded_cluster.py [nats://127.0.0.1:4222]

Every run uses its own namespace and cluster name, so it can run again and again against the
same server (inspect what it left: ``aether events stats --stream cluster-example --all``).

Each node is a :class:`~aether.cluster.ClusterManager` (here three in one process, each with
its own connection; in production one per process or machine — see ``aether node``). The
leader places the 64 shards on the live nodes; ``request(actor_id, ...)`` reaches the node
owning the actor's shard wherever it is asked. When a node leaves, its shards are handed off
(in-flight work finishes first) and requests keep succeeding.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections import Counter
from dataclasses import dataclass

from nats.aio.client import Client

from aether.cluster import ClusterManager
from aether.connect import connect
from aether.demo.bank import BankCommand, BankService, decode_reply, encode_command
from aether.store import JetStreamEventStore
from aether.testing import nats_url_or_embedded


@dataclass
class Node:
    """One node: a connection, a store, a bank service and the cluster membership."""

    nc: Client
    store: JetStreamEventStore
    service: BankService
    cluster: ClusterManager

    async def stop(self) -> None:
        await self.cluster.stop()  # a graceful leave: shards are handed off first
        await self.service.repository.aclose()
        await self.store.aclose()
        await self.nc.close()


async def start_node(url: str, run: str, node_id: str) -> Node:
    nc = await connect(url, name=node_id)
    store = await JetStreamEventStore.create(nc, "cluster-example", namespace=run)
    cluster = f"example-{run}"
    service = BankService.create(store, node_id, snapshot_every=20)
    manager = ClusterManager(nc, node_id=node_id, cluster=cluster, handler=service.handle)

    def forget(shards: frozenset[int]) -> None:
        """A node is the single writer of the accounts it owns: it caches them, and forgets them when they move."""
        service.repository.forget_if(lambda actor_id: manager.shard_for(actor_id) in shards)

    manager.on_shards_released(forget)
    await manager.start()
    return Node(nc, store, service, manager)


async def balanced(nodes: list[ClusterManager], timeout: float = 30.0) -> None:
    """Wait until every shard is served by exactly one of ``nodes``."""
    async with asyncio.timeout(timeout):
        while True:
            owned = [node.owned_shards() for node in nodes]
            if all(owned) and sum(len(o) for o in owned) == nodes[0].options.shard_count:
                return
            await asyncio.sleep(0.1)


async def main() -> None:
    async with nats_url_or_embedded(sys.argv[1] if len(sys.argv) > 1 else None) as url:
        run = f"run-{secrets.token_hex(4)}"
        print(f"namespace and cluster of this run: {run}")
        started = [await start_node(url, run, f"node-{i}") for i in (1, 2, 3)]
        nodes = [node.cluster for node in started]
        await balanced(nodes)
        print(f"leader: {nodes[0].leader_id} (term {nodes[0].term}); shards: "
              + ", ".join(f"{n.node_id} {len(n.owned_shards())}" for n in nodes))

        accounts = [f"acct-{i}" for i in range(30)]
        entry = nodes[0]  # any node routes to the owner

        async def command(actor: str, op: str, amount: int = 0) -> str:
            cmd = BankCommand(op=op, command_id=f"{actor}-{op}-{amount}-{os.urandom(4).hex()}",  # type: ignore[arg-type]
                              amount=amount)
            reply = decode_reply(await entry.request(actor, encode_command(cmd), timeout=10))
            assert reply.ok, reply.error
            return reply.node

        await asyncio.gather(*(command(a, "open") for a in accounts))
        handled = Counter(await asyncio.gather(*(command(a, "deposit", 10) for a in accounts)))
        print(f"30 deposits sent to {entry.node_id}, handled by their owners: {dict(sorted(handled.items()))}")

        await started[2].stop()
        await balanced(nodes[:2])
        print(f"{nodes[2].node_id} left; shards now: "
              + ", ".join(f"{n.node_id} {len(n.owned_shards())}" for n in nodes[:2]))
        handled = Counter(await asyncio.gather(*(command(a, "deposit", 5) for a in accounts)))
        print(f"30 more deposits, handled by: {dict(sorted(handled.items()))}")

        balances = [decode_reply(await entry.request(a, encode_command(BankCommand(op="balance", command_id="q"))))
                    for a in accounts]
        assert all(b.balance == 15 for b in balances), balances
        print("every account has balance 15: nothing lost in the handoff")

        for node in started[:2]:
            await node.stop()
    print("sharded cluster example: OK")


if __name__ == "__main__":
    asyncio.run(main())
