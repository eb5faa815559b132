"""The dashboard in a real headless Chromium: a 3-node cluster, then its leader is SIGKILLed.

As a person would: open the page, see the three members, the leader and a 64-cell shard grid;
kill the leader's process; see the grid re-colour (no cell left to the dead node) and another
node lead. A screenshot of the page is saved in the test's temporary folder (and, when
``AETHER_SCREENSHOT_DIR`` is set, copied there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from _cdp import Browser, chromium_binary
from _dashboard_procs import AetherProc, start_dashboard, start_node
from aether.cluster import ClusterClient
from aether.demo.bank import BankCommand, encode_command
from aether.errors import AetherError
from aether.event import Event
from aether.projection import Projection, ProjectionOptions, ProjectionRunner
from aether.store import JetStreamEventStore

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

GRID_READY = """(() => {
  const rows = [...document.querySelectorAll('#members tbody tr')].map(r => r.dataset.node);
  const cells = [...document.querySelectorAll('#shard-grid .cell')];
  const leader = document.querySelector('#leader').textContent;
  const owners = new Set(cells.map(c => c.dataset.owner));
  const done = rows.length === %d && cells.length === 64 && cells.every(c => c.dataset.owner)
    && rows.includes(leader) && owners.size === %d;
  return done ? {rows, leader, owners: cells.map(c => c.dataset.owner),
                 colours: cells.map(c => c.style.backgroundColor)} : null;
})()"""


@pytest.fixture
def started() -> Iterator[list[AetherProc]]:
    procs: list[AetherProc] = []
    yield procs
    for proc in procs:
        proc.close()


async def _traffic(url: str, cluster: str, stop: asyncio.Event) -> int:
    """Open and credit bank accounts until ``stop`` (requests that fail during the failover are fine)."""
    nc = await nats.connect(url)
    sent = 0
    try:
        async with ClusterClient(nc, cluster=cluster, request_timeout=10) as client:
            await client.wait_ready()
            while not stop.is_set():
                account = f"acct-{sent % 40}"
                command = BankCommand(op="open", command_id=f"c{sent}", owner="ann") if sent < 40 else \
                    BankCommand(op="deposit", command_id=f"c{sent}", amount=5)
                with contextlib.suppress(AetherError):
                    await client.request(account, encode_command(command))
                sent += 1
                await asyncio.sleep(0.02)
    finally:
        await nc.close()
    return sent


async def test_dashboard_shows_failover_in_a_browser(nats_url: str, unique_name: str, tmp_path: Path,
                                                     started: list[AetherProc]) -> None:
    chromium_binary()
    cluster = unique_name[:40]
    nodes: dict[str, AetherProc] = {}
    for node_id in ("n1", "n2", "n3"):
        proc, ready = await asyncio.to_thread(start_node, node_id, nats_url, cluster, unique_name, tmp_path)
        started.append(proc)
        nodes[node_id] = proc
        assert ready["event"] == "ready"
    dashboard, url = await asyncio.to_thread(start_dashboard, nats_url, cluster, tmp_path)
    started.append(dashboard)

    stop = asyncio.Event()
    traffic = asyncio.get_running_loop().create_task(_traffic(nats_url, cluster, stop))
    nc = await nats.connect(nats_url)
    seen: list[Event] = []

    async def count(event: Event, position: int) -> None:
        seen.append(event)

    store = await JetStreamEventStore.create(nc, unique_name)
    runner = ProjectionRunner(nc, Projection("activity", default=count), store, node_id="reporter",
                              options=ProjectionOptions(checkpoint_interval=0.2))
    await runner.start()
    try:
        async with Browser() as browser:
            await browser.navigate(url)
            before = await browser.wait_for(GRID_READY % (3, 3), timeout=60, what="3 members and a full grid")
            assert sorted(before["rows"]) == ["n1", "n2", "n3"]
            leader = before["leader"]
            assert leader in nodes
            led = [s for s, owner in enumerate(before["owners"]) if owner == leader]
            assert led, "the leader owns shards"
            term = int(await browser.evaluate("document.querySelector('#term').textContent"))
            await browser.wait_for("document.querySelectorAll('#streams tbody tr').length > 0", timeout=30,
                                   what="the event stream is listed")
            await browser.wait_for("(() => { const r = document.querySelector('#projections tbody tr');"
                                   " return r && r.dataset.projection === 'activity'"
                                   " && r.cells[5].textContent === 'reporter' })()", timeout=30,
                                   what="the projection, its position and holder")
            await browser.screenshot(tmp_path / "dashboard-before.png")

            nodes[leader].kill()

            after = await browser.wait_for(GRID_READY % (2, 2), timeout=60,
                                           what="the grid re-coloured over the two survivors")
            assert leader not in after["rows"] and leader not in after["owners"]
            new_leader = after["leader"]
            assert new_leader != leader and new_leader in nodes
            assert int(await browser.evaluate("document.querySelector('#term').textContent")) > term
            for shard in led:
                assert after["owners"][shard] != leader
                assert after["colours"][shard] != before["colours"][shard], f"shard {shard} kept its colour"
            kinds = await browser.wait_for(
                "(() => { const k = [...document.querySelectorAll('#events li')].map(li => li.dataset.kind);"
                " return k.includes('failure') && k.includes('leader') && k.includes('shards') ? k : null })()",
                timeout=30, what="failure, leader and shard events listed")
            assert kinds
            await browser.wait_for("document.querySelector('#connection').textContent === 'live'", timeout=10)
            shot = await browser.screenshot(tmp_path / "dashboard.png")
            assert shot.stat().st_size > 10_000
            assert not [c for c in browser.console if "Error" in c], browser.console
    finally:
        stop.set()
        sent = await traffic
        await runner.stop()
        await nc.close()
    assert sent > 0 and seen
    target = os.environ.get("AETHER_SCREENSHOT_DIR")
    if target:
        shutil.copy(tmp_path / "dashboard.png", Path(target) / "dashboard.png")
