"""Partition-like fault (issue 7): a node SIGSTOPped past its lease while it is in the middle of a
request. Another node takes the actor over and appends; when the paused node resumes, its stale
append is rejected by the store's expected-sequence check, and the node rejoins cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aether.cluster.client import ClusterClient
from aether.errors import AetherError
from aether.store import JetStreamEventStore
from aether.testing import wait_for

pytestmark = pytest.mark.anyio

SCRIPT = Path(__file__).with_name("_stale_owner_node.py")


@pytest.fixture
def procs() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    running: dict[str, subprocess.Popen[bytes]] = {}
    yield running
    for proc in running.values():
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()


def _spawn(url: str, node_id: str, cluster: str, stream: str, folder: Path) -> subprocess.Popen[bytes]:
    with open(folder / f"{node_id}.log", "wb") as log:
        return subprocess.Popen([sys.executable, str(SCRIPT), url, node_id, cluster, stream, str(folder)],
                                stdout=log, stderr=log, start_new_session=True)


async def test_paused_owner_cannot_append_with_stale_ownership(
        nc: Any, nats_url: str, unique_name: str, tmp_path: Path, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    cluster, stream = f"c{unique_name[:20]}".replace("-", ""), unique_name
    store = await JetStreamEventStore.create(nc, stream)
    for node_id in ("a", "b"):
        procs[node_id] = _spawn(nats_url, node_id, cluster, stream, tmp_path)
    client = ClusterClient(nc, cluster=cluster, request_timeout=20)
    await client.start()
    try:
        await client.wait_ready(timeout=60)
        await wait_for(lambda: {client.owner_of(f"acc-{i}") for i in range(50)} == {"a", "b"}, timeout=60,
                       message="both nodes own shards")
        actor = next(f"acc-{i}" for i in range(50) if client.owner_of(f"acc-{i}") == "a")
        for _ in range(3):
            await client.request(actor, b"n")
        assert await store.get_latest_version(actor) == 3

        held = asyncio.create_task(client.request(actor, b"hold", timeout=60))
        await wait_for(lambda: (tmp_path / "a.holding").exists(), timeout=30, message="node a holding")
        os.kill(procs["a"].pid, signal.SIGSTOP)
        await wait_for(lambda: client.owner_of(actor) == "b", timeout=60, message="b takes the actor over")
        for _ in range(2):
            await client.request(actor, b"n", timeout=30)
        assert await store.get_latest_version(actor) == 5

        (tmp_path / "release").write_text("go")
        os.kill(procs["a"].pid, signal.SIGCONT)
        await wait_for(lambda: (tmp_path / "a.result").exists(), timeout=30, message="a's stale append attempt")
        assert (tmp_path / "a.result").read_text() == "rejected:VersionConflictError"
        with pytest.raises(AetherError):
            await held  # the held request never reports success

        events = await store.get_events(actor)
        assert [e.version for e in events] == [1, 2, 3, 4, 5]
        assert not any(e.event_type == "Held" for e in events)

        # a rejoins cleanly: it owns shards again and every actor answers
        await wait_for(lambda: "a" in {client.owner_of(f"acc-{i}") for i in range(50)}, timeout=60,
                       message="a owns shards again")
        for i in range(50):
            await client.request(f"acc-{i}", b"n", timeout=30)
        for i in range(50):
            versions = [e.version for e in await store.get_events(f"acc-{i}")]
            assert versions == list(range(1, len(versions) + 1))
    finally:
        await client.aclose()
