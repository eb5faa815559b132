"""The cluster KV on a 3-server NATS cluster (R3 bucket): clients on every server race
compare-and-set writes of one key; the loser always gets KvConflict (the replicated stream reports
a lost race as 10164, not 10071), never a raw JetStreamApiError."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from aether.cluster._kv import ClusterBucket, KvConflict
from aether.connect import close, connect
from aether.testing import NatsCluster

pytestmark = pytest.mark.anyio

ROUNDS = 30
WRITERS = 2  # per server


async def test_racing_compare_and_set_writes_on_r3_conflict_cleanly(
        nats_cluster_factory: Callable[..., NatsCluster], unique_name: str) -> None:
    servers = nats_cluster_factory(3)
    clients = [await connect(url) for url in servers.urls]
    try:
        cluster = unique_name.replace(".", "-")[:40]
        buckets = [ClusterBucket(nc, cluster, replicas=3, timeout=10.0) for nc in clients for _ in range(WRITERS)]
        for bucket in buckets:
            await bucket.ensure()
        revision = await buckets[0].write("k", b"0", last=0)
        errors: list[BaseException] = []
        for round_ in range(1, ROUNDS + 1):
            outcomes = await asyncio.gather(
                *(bucket.write("k", f"{round_}-{i}".encode(), last=revision) for i, bucket in enumerate(buckets)),
                return_exceptions=True)
            won = [o for o in outcomes if isinstance(o, int)]
            lost = [o for o in outcomes if isinstance(o, BaseException)]
            errors += [o for o in lost if not isinstance(o, KvConflict)]
            assert len(won) == 1 and len(lost) == len(buckets) - 1, outcomes
            revision = won[0]
        assert not errors, errors
        entry = await buckets[1].get("k", linearizable=True)
        assert entry is not None and entry.revision == revision
        for bucket in buckets:
            await bucket.aclose()
    finally:
        for nc in clients:
            await close(nc)
