"""History reads on an R3 stream (issue 10): what completing a read from the stream leader costs.

On a replicated stream any replica may answer a direct get, and a follower can lag behind
acknowledged writes, so :meth:`JetStreamEventStore.get_events` asks the stream leader for the
actor's last sequence at the same time as it reads the first page (and reads from the leader
whatever the page lacks). This module starts a 3-server :class:`aether.testing.NatsCluster`,
writes short histories into an R3 stream and measures, on a client connected to a *follower*:

* Aether ``get_events`` of a 10-event history, against the raw baseline: one batched direct get
  (``no_hdr``) of the subject with nats-py, decoding each event — what the store did before, and
  what may return a short history;
* the same for a 200-event history.

Rows alternate baseline and Aether, best run of each side reported (reads/s).
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats
from nats.aio.client import Client

from aether.codec import decode_event
from aether.event import Event
from aether.names import event_subject
from aether.store import JetStreamEventStore
from aether.testing import NatsCluster
from benchmarks._harness import Report, Timer

__all__ = ["run"]

GROUP = "store (R3)"
_json = msgspec.json.encode


async def _store(nc: Client, name: str) -> JetStreamEventStore:
    for _ in range(150):  # the cluster's meta leader may still be settling
        try:
            return await JetStreamEventStore.create(nc, name, replicas=3, timeout=5.0)
        except Exception:
            await asyncio.sleep(0.2)
    raise RuntimeError("could not create the R3 stream")


def _aether(store: JetStreamEventStore, actor: str, reads: int, history: int) -> Callable[[], Awaitable[float]]:
    async def measure() -> float:
        with Timer() as t:
            for _ in range(reads):
                events = await store.get_events(actor)
        assert len(events) == history
        return reads / t.seconds
    return measure


def _raw(nc: Client, store: JetStreamEventStore, actor: str, reads: int,
         history: int) -> Callable[[], Awaitable[float]]:
    """One reply subscription for all reads (as Aether has); one batched direct get per read."""
    api = f"$JS.API.DIRECT.GET.{store.stream}"
    subject = event_subject(store.options.subject_prefix, store.stream, actor)
    body = _json({"seq": 1, "next_by_subj": subject, "batch": 1000, "no_hdr": True})

    async def measure() -> float:
        inbox = nc.new_inbox()
        loop = asyncio.get_running_loop()
        state: dict[str, Any] = {}

        async def on_msg(msg: Any) -> None:
            if msg.headers and "Status" in msg.headers:
                state["done"].set_result(None)
                return
            state["events"].append(decode_event(msg.data))

        sub = await nc.subscribe(inbox, cb=on_msg)
        try:
            with Timer() as t:
                for _ in range(reads):
                    state["done"], state["events"] = loop.create_future(), []
                    await nc.publish(api, body, reply=inbox)
                    await asyncio.wait_for(state["done"], 10)
        finally:
            await sub.unsubscribe()
        assert len(state["events"]) <= history
        return reads / t.seconds
    return measure


async def _row(report: Report, name: str, rounds: int, aether: Callable[[], Awaitable[float]],
               raw: Callable[[], Awaitable[float]]) -> None:
    await aether()
    await raw()
    results: dict[str, list[float]] = {"aether": [], "raw": []}
    for r in range(rounds):
        order = [("aether", aether), ("raw", raw)] if r % 2 == 0 else [("raw", raw), ("aether", aether)]
        for key, measure in order:
            results[key].append(await measure())
    median_ratio = statistics.median(results["aether"]) / statistics.median(results["raw"])
    report.add(GROUP, name, aether=max(results["aether"]), baseline=max(results["raw"]), unit="reads/s",
               notes=f"best of {rounds} alternating runs (median ratio {median_ratio:.2f}); client on a "
                     "follower; baseline: one batched direct get (no_hdr), which may return a short history")


async def run(report: Report, quick: bool) -> None:
    """Start a 3-server cluster and add the R3 history-read rows to ``report``."""
    rounds, reads = (3, 100) if quick else (7, 500)
    async with NatsCluster(3) as cluster:
        admin = await nats.connect(servers=cluster.urls)
        try:
            writer = await _store(admin, "BENCHR3")
            leader = (await writer.stream_info())["cluster"]["leader"]
            follower = next(s for s in cluster.servers if s.server_name != leader)
            for history in (10, 200):
                actor = f"bench-{history}"
                for start in range(1, history + 1, 100):
                    batch = [Event("E", actor, v, {"n": v}) for v in range(start, min(start + 100, history + 1))]
                    await writer.save_events(batch)
            nc = await nats.connect(follower.url)
            try:
                reader = await _store(nc, "BENCHR3")
                for history in (10, 200):
                    actor = f"bench-{history}"
                    await _row(report, f"get_events of a {history}-event history, R3 stream", rounds,
                               _aether(reader, actor, reads, history), _raw(nc, reader, actor, reads, history))
            finally:
                await nc.close()
        finally:
            await admin.close()
