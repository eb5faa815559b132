"""The JetStream store on a 3-server NATS cluster with R3 streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from aether import Event
from aether.errors import AetherError, VersionConflictError
from aether.names import event_subject
from aether.store import JetStreamEventStore
from aether.testing import NatsCluster
from aether.testing.conformance import append_with_retry

pytestmark = pytest.mark.anyio


async def _create(nc: Any, name: str) -> JetStreamEventStore:
    # the meta leader may still be settling right after the cluster starts
    for _ in range(100):
        try:
            return await JetStreamEventStore.create(nc, name, replicas=3, timeout=2.0)
        except AetherError:
            await asyncio.sleep(0.2)
    raise AssertionError("could not create an R3 stream")


async def test_r3_store_semantics_and_idempotent_retries(nats_cluster_factory: Callable[..., NatsCluster]) -> None:
    cluster = nats_cluster_factory(3)
    nc1 = await nats.connect(servers=[cluster.urls[0]])
    nc2 = await nats.connect(servers=[cluster.urls[1]])
    try:
        a = await _create(nc1, "R3")
        b = await _create(nc2, "R3")
        assert (await a.stream_info())["config"]["num_replicas"] == 3
        assert await b.get_latest_version("acc") == 0
        event = Event("E", "acc", 1)
        await a.save_event(event)
        await b.save_event(event)  # retry of a stored event through another server: no duplicate
        batch = [Event("E", "acc", v) for v in (2, 3, 4)]
        await a.save_events(batch)
        await b.save_events(batch)  # retried batch: de-duplication runs first on a cluster
        with pytest.raises(VersionConflictError):
            await b.save_event(Event("E", "acc", 3))
        assert [e.version for e in await b.get_events("acc")] == [1, 2, 3, 4]

        await asyncio.gather(*(append_with_retry(s, "hot") for s in [a, b] * 50))
        events = await a.get_events("hot")
        assert [e.version for e in events] == list(range(1, 101))
    finally:
        await nc1.close()
        await nc2.close()




async def test_a_history_read_answered_by_a_lagging_replica_is_never_short(
        nats_cluster_factory: Callable[..., NatsCluster]) -> None:
    """Any replica may answer a direct get, and a follower that has not yet applied the latest
    writes answers with a true but short prefix of the history (nats-server 2.12+ ignores the
    ``min_last_seq`` that would make it defer: docs/reliability.md). The lagging replica is
    played here, deterministically, by a frozen copy of the stream made after the first 10
    writes (a mirror, then promoted, so it stops following): the store's direct gets are sent to
    it. The history read must still hold all 20 acknowledged events: the store completes it
    from the stream leader."""
    cluster = nats_cluster_factory(3)
    nc = await nats.connect(servers=cluster.urls)
    try:
        writer = await _create(nc, "LAGGING")
        for version in range(1, 11):
            await writer.save_event(Event("E", "acc", version))
        await _frozen_copy(nc, writer.stream, "LAGGING_COPY", messages=10)
        for version in range(11, 21):
            await writer.save_event(Event("E", "acc", version))
        # a reader that never wrote (no cache to go by) whose direct gets reach the lagging copy
        reader_nc = DirectGetsRedirected("$JS.API.DIRECT.GET.LAGGING", "$JS.API.DIRECT.GET.LAGGING_COPY")
        await reader_nc.connect(servers=cluster.urls)
        reader = await _create(reader_nc, "LAGGING")
        subject = event_subject(reader.options.subject_prefix, reader.stream, "acc")
        copy = await reader_nc.request("$JS.API.DIRECT.GET.LAGGING",  # (redirected)
                                       json.dumps({"last_by_subj": subject}).encode(), timeout=5)
        assert (copy.headers or {})["Nats-Sequence"] == "10"  # the copy lags by 10 writes
        assert [e.version for e in await reader.get_events("acc")] == list(range(1, 21))
        assert [e.version for e in await reader.get_events("acc", from_version=8)] == list(range(8, 21))
        assert [e.version async for e in reader.iter_events("acc", from_version=15)] == list(range(15, 21))
        assert [e.version for e in await reader.get_events("acc", from_version=21)] == []
        assert reader_nc.redirected > 1  # the reads did go to the copy
    finally:
        await reader_nc.close()
        await nc.close()


class DirectGetsRedirected(Client):
    """A nats-py client whose direct gets on one stream reach another (only the public
    ``publish``, through which every request goes, is overridden)."""

    def __init__(self, direct_get: str, instead: str) -> None:
        super().__init__()
        self.direct_get = direct_get
        self.instead = instead
        self.redirected = 0

    async def publish(self, subject: str, payload: bytes = b"", reply: str = "",
                      headers: dict[str, str] | None = None) -> None:
        if subject == self.direct_get or subject.startswith(self.direct_get + "."):
            subject = self.instead + subject[len(self.direct_get):]
            self.redirected += 1
        await super().publish(subject, payload, reply, headers)


async def _frozen_copy(nc: Any, source: str, name: str, *, messages: int) -> None:
    """A copy of ``source`` holding its first ``messages`` messages, same subjects and sequences."""
    async def api(call: str, body: dict[str, Any]) -> dict[str, Any]:
        for _ in range(100):
            reply: dict[str, Any] = json.loads((await nc.request(f"$JS.API.{call}", json.dumps(body).encode(),
                                                                 timeout=10)).data)
            if "error" not in reply:
                return reply
            await asyncio.sleep(0.2)
        raise AssertionError(f"{call}: {reply['error']}")

    await api(f"STREAM.CREATE.{name}", {"name": name, "mirror": {"name": source}, "num_replicas": 1,
                                         "allow_direct": True, "storage": "file"})
    for _ in range(300):
        info = await api(f"STREAM.INFO.{name}", {})
        if info["state"]["messages"] >= messages:
            break
        await asyncio.sleep(0.1)
    assert info["state"]["messages"] == messages
    config = info["config"]
    del config["mirror"]  # promoted: it stops following the source
    await api(f"STREAM.UPDATE.{name}", config)
