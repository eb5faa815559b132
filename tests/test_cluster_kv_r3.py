"""The cluster bucket's compare-and-set on a replicated (R3) bucket: writes racing on one key.

On a clustered stream the server answers a racing ``Nats-Expected-Last-Subject-Sequence`` write
with err_code 10164 (another write of the subject is in flight) as well as 10071 (wrong last
sequence); both are a lost compare-and-set, never a server failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import nats
import pytest

from aether.cluster._kv import ClusterBucket, KvConflict
from aether.errors import AetherError
from aether.testing import NatsCluster

pytestmark = pytest.mark.anyio


async def _eventually_writable(bucket: ClusterBucket, key: str) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            await bucket.write(key, b"")
            return
        except AetherError:  # "no responders" until the stream's interest reached this server
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_racing_compare_and_set_on_r3_bucket_is_a_conflict_never_an_error(
        nats_cluster_factory: Callable[..., NatsCluster], unique_name: str) -> None:
    cluster = nats_cluster_factory(3)
    clients = [await nats.connect(url) for url in cluster.urls]  # one client per server
    buckets = [ClusterBucket(nc, "cas-" + unique_name[-40:].replace(".", "-"), replicas=3, timeout=10.0)
               for nc in clients]
    try:
        await buckets[0].ensure()
        for i, bucket in enumerate(buckets):  # the new stream's subjects reach every server
            await _eventually_writable(bucket, f"warm-{i}")
        revision = await buckets[0].write("map", b"0", last=0)
        for round_ in range(20):
            outcomes = await asyncio.gather(
                *(buckets[i % 3].write("map", f"{round_}-{i}".encode(), last=revision) for i in range(12)),
                return_exceptions=True)
            wins = [o for o in outcomes if isinstance(o, int)]
            others = [o for o in outcomes if not isinstance(o, int | KvConflict)]
            assert not others, f"round {round_}: a lost compare-and-set raised {others[0]!r}"
            assert len(wins) == 1, f"round {round_}: {len(wins)} writers won one compare-and-set"
            revision = wins[0]
        entry = await buckets[1].get("map", linearizable=True)
        assert entry is not None and entry.revision == revision
    finally:
        for bucket in buckets:
            await bucket.aclose()
        for nc in clients:
            await nc.close()
