"""The adapter's KV client (aether._nats.kv) and lease primitive (aether._nats.lease) against real
nats-server processes: compare-and-set with every conflict code, create over a tombstone, the watch,
bucket adoption, and leases (terms, renewal, lost acknowledgements, takeover, racing acquirers on R3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from nats.aio.client import Client

from aether._nats.kv import KvBucket, KvConflict, KvEntry
from aether._nats.lease import LEASE_HEADER, Lease
from aether.errors import AetherError, InvalidInputError, StoreError
from aether.testing import NatsCluster, wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
async def connect(nats_url: str) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    clients: list[Client] = []

    async def factory(url: str = nats_url) -> Client:
        client = await nats.connect(url)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


def _bucket_name(unique_name: str) -> str:
    return "kv-" + unique_name[-40:].replace(".", "-")


async def test_create_update_delete_and_every_conflict_is_a_kv_conflict(
        connect: Callable[..., Awaitable[Client]], unique_name: str) -> None:
    kv = KvBucket(await connect(), _bucket_name(unique_name), keyed_reads=True)
    await kv.ensure()
    try:
        assert await kv.get("k") is None
        first = await kv.create("k", b"one")
        with pytest.raises(KvConflict) as info:
            await kv.create("k", b"two")
        assert info.value.err_code == 10071
        with pytest.raises(KvConflict):
            await kv.write("k", b"two", last=first + 100)
        second = await kv.write("k", b"two", last=first)
        tombstone = await kv.delete("k", last=second)
        entry = await kv.get("k")
        assert entry is not None and entry.deleted and entry.revision == tombstone
        third = await kv.create("k", b"three")  # a tombstone is no live value
        entry = await kv.get("k", linearizable=True)
        assert entry is not None and entry == KvEntry("k", b"three", third, "PUT", entry.headers)
        assert first < second < tombstone < third
    finally:
        await kv.destroy()
        await kv.aclose()


async def test_ensure_adopts_an_existing_bucket_and_checks_its_max_age(
        connect: Callable[..., Awaitable[Client]], unique_name: str) -> None:
    nc = await connect()
    name = _bucket_name(unique_name)
    first = KvBucket(nc, name, max_age=5, msg_ttl=False)
    await first.ensure()
    try:
        await first.put("k", b"v")
        again = KvBucket(nc, name, max_age=5, msg_ttl=False)
        await again.ensure()  # adopted, data kept
        entry = await again.get("k")
        assert entry is not None and entry.value == b"v"
        with pytest.raises(StoreError, match="max age 5s"):
            await KvBucket(nc, name, max_age=7, msg_ttl=False).ensure()
        with pytest.raises(StoreError, match="does not exist"):
            await KvBucket(nc, name + "-missing").ensure(create=False)
        await again.aclose()
    finally:
        await first.destroy()
        await first.aclose()


async def test_the_watch_yields_stored_changes_and_ignores_refused_writes(
        connect: Callable[..., Awaitable[Client]], unique_name: str) -> None:
    nc = await connect()
    kv = KvBucket(nc, _bucket_name(unique_name))
    await kv.ensure()
    seen: list[KvEntry | None] = []
    watch = await kv.watch("lease")

    async def follow() -> None:
        async for entry in watch:
            seen.append(entry)

    task = asyncio.create_task(follow())
    try:
        await wait_for(lambda: seen == [None], message="the initial state (no value)")
        rev = await kv.create("lease", b"a")
        await wait_for(lambda: len(seen) == 2, message="the first write")
        with pytest.raises(KvConflict):  # published to the key's subject, but refused by the stream
            await kv.create("lease", b"b")
        rev2 = await kv.write("lease", b"c", last=rev)
        tomb = await kv.delete("lease", last=rev2)
        await wait_for(lambda: seen[-1] is not None and seen[-1].deleted, message="the tombstone")
        revisions = [e.revision if e is not None else 0 for e in seen]
        values = [e.value for e in seen if e is not None and not e.deleted]
        assert revisions[0] == 0 and revisions[-1] == tomb
        assert b"b" not in values and values[0] == b"a"
        assert revisions == sorted(set(revisions)), "each stored state once, in order"
    finally:
        await watch.stop()
        await asyncio.wait_for(task, 10)
        await kv.destroy()
        await kv.aclose()


async def test_a_lease_is_held_by_one_owner_and_terms_increase(
        connect: Callable[..., Awaitable[Client]], unique_name: str) -> None:
    nc = await connect()
    kv = KvBucket(nc, _bucket_name(unique_name))
    await kv.ensure()
    a = Lease(kv, "job", ttl=5, margin=0.5)
    b = Lease(kv, "job", ttl=5, margin=0.5)
    try:
        before = time.monotonic()
        acquired, sighting = await a.try_acquire(b"a")
        assert acquired and sighting.free and a.held
        assert before + 4.5 <= a.deadline <= time.monotonic() + 4.5  # measured from before the write
        term = a.term
        acquired, sighting = await b.try_acquire(b"b")
        assert not acquired and not b.held and sighting.term == term and sighting.new
        assert await a.renew(b"a") and a.term == term and a.revision > term
        # a fenced write succeeds while the lease is at the holder's revision, not after a change
        await kv.write("guarded", b"1", headers=a.fence_headers())
        await a.release()
        assert not a.held
        with pytest.raises(KvConflict):
            await kv.write("guarded", b"2", headers=a.bucket.fence_headers("job", a.term))
        acquired, sighting = await b.try_acquire(b"b")
        assert acquired and sighting.free and b.term > term
        assert not await a.renew(b"a")  # a released lease is not renewed
        with pytest.raises(InvalidInputError):
            Lease(kv, "job", ttl=1, margin=1)
    finally:
        await kv.destroy()
        await kv.aclose()


async def test_a_renewal_whose_reply_was_lost_is_adopted_without_extending_the_deadline(
        connect: Callable[..., Awaitable[Client]], unique_name: str) -> None:
    kv = KvBucket(await connect(), _bucket_name(unique_name))
    await kv.ensure()
    lease = Lease(kv, "job", ttl=10, margin=1)
    try:
        assert (await lease.try_acquire(b"me"))[0]
        deadline = lease.deadline
        # the holder's renewal was stored but its reply never arrived: the same write, made here
        mark = {LEASE_HEADER: f"{lease.token}.{lease.term}"}
        stored = await kv.write("job", b"me", last=lease.revision, headers=mark)
        assert await lease.renew(b"me")
        assert lease.revision == stored and lease.deadline == deadline
        assert await lease.renew(b"me") and lease.deadline > deadline  # a real renewal extends it
        # a write that is not the holder's own: the lease is lost
        await kv.write("job", b"intruder", last=lease.revision)
        assert not await lease.renew(b"me") and not lease.held
    finally:
        await kv.destroy()
        await kv.aclose()


async def test_a_stale_lease_is_taken_over_only_after_its_holder_stepped_down(
        connect: Callable[..., Awaitable[Client]], unique_name: str) -> None:
    # no TTL on the server at all: the takeover relies on the contender's own observation
    kv = KvBucket(await connect(), _bucket_name(unique_name), msg_ttl=False)
    await kv.ensure()
    holder = Lease(kv, "job", ttl=1.5, margin=0.2)
    contender = Lease(kv, "job", ttl=1.5, margin=0.2)
    try:
        assert (await holder.try_acquire(b"h"))[0]
        held_when_taken: list[bool] = []

        async def take() -> bool:
            acquired, _ = await contender.try_acquire(b"c")
            if acquired:
                held_when_taken.append(holder.held)
            return acquired

        await wait_for(take, timeout=30, interval=0.05, message="the takeover of a lease nobody renews")
        assert held_when_taken == [False], "the old holder still believed it held the lease"
        assert contender.term > holder.term
        assert not await holder.renew(b"h")
    finally:
        await kv.destroy()
        await kv.aclose()


async def _eventually_writable(kv: KvBucket, key: str) -> None:
    async def writable() -> bool:
        try:
            await kv.put(key, b"")
        except AetherError:  # "no responders" until the stream's interest reached this server
            return False
        return True

    await wait_for(writable, timeout=30, interval=0.1, message=f"bucket writable through {key}")


async def test_racing_acquirers_on_r3_one_holder_per_term_terms_strictly_increase(
        nats_cluster_factory: Callable[..., NatsCluster], unique_name: str) -> None:
    cluster = nats_cluster_factory(3)
    clients = [await nats.connect(url) for url in cluster.urls]  # one client per server
    name = _bucket_name(unique_name)
    buckets = [KvBucket(nc, name, replicas=3, timeout=10.0) for nc in clients]
    leases = [Lease(buckets[i % 3], "job", ttl=30, margin=1, linearizable=True) for i in range(9)]
    try:
        await buckets[0].ensure()
        for i, kv in enumerate(buckets):
            await _eventually_writable(kv, f"warm-{i}")
        terms: list[int] = []
        for round_ in range(15):
            outcomes = await asyncio.gather(*(lease.try_acquire(f"{i}".encode()) for i, lease in enumerate(leases)),
                                            return_exceptions=True)
            errors = [o for o in outcomes if isinstance(o, BaseException)]
            assert not errors, f"round {round_}: a lost race raised {errors[0]!r}"
            winners = [lease for lease, outcome in zip(leases, outcomes, strict=True)
                       if not isinstance(outcome, BaseException) and outcome[0]]
            assert len(winners) == 1, f"round {round_}: {len(winners)} holders of one term"
            assert [lease for lease in leases if lease.held] == winners
            winner = winners[0]
            assert not terms or winner.term > terms[-1], f"round {round_}: term {winner.term} after {terms}"
            terms.append(winner.term)
            # the holder renews while the others keep trying: still exactly one holder
            others = [lease.try_acquire(b"x") for lease in leases if lease is not winner]
            renewed, tries = await asyncio.gather(winner.renew(b"w"), asyncio.gather(*others))
            assert renewed and not any(acquired for acquired, _ in tries)
            await winner.release()
        entry = await buckets[1].get("job", linearizable=True)
        assert entry is not None and entry.deleted
    finally:
        await buckets[0].destroy()
        for kv in buckets:
            await kv.aclose()
        for nc in clients:
            await nc.close()


async def test_ensure_upgrades_an_older_bucket_to_direct_gets_and_message_ttls(
        connect: Callable[..., Awaitable[Client]], unique_name: str) -> None:
    nc = await connect()
    name = _bucket_name(unique_name)
    old = KvBucket(nc, name, msg_ttl=False)
    config = {**old.config(), "allow_direct": False}  # as an older Aether (or nats-py) created it
    await old.api.api(f"STREAM.CREATE.{old.stream}", config)
    kv = KvBucket(nc, name)
    try:
        await kv.ensure()
        info = await kv.api.api(f"STREAM.INFO.{kv.stream}")
        assert info["config"]["allow_direct"] and info["config"]["allow_msg_ttl"] and kv.msg_ttl
        revision = await kv.write("k", b"v", ttl=0.2)  # rounded up to the server's 1 s
        entry = await kv.get("k")
        assert entry is not None and entry.revision == revision and entry.headers.get("Nats-TTL") == "1s"
    finally:
        await kv.destroy()
        await kv.aclose()
        await old.aclose()
