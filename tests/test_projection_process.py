"""Projection processes that are SIGKILLed: restarts and cluster failover end with the exact read model.

The projection runs in a separate OS process (``tests/_projection_worker.py``) that applies
balances idempotently into a SQLite file, so the read model survives the kill and the test
can compare it with the balances computed from the store.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from _projection_helpers import balances_from_store, populate_accounts
from aether.names import encode_token
from aether.projection import CheckpointStore, EventSource, ProjectionLease
from aether.projection.checkpoint import checkpoint_key
from aether.store import JetStreamEventStore
from aether.testing import wait_for

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("_projection_worker.py")


class Worker:
    """One worker process; its stdout goes to a file (never an unread pipe)."""

    def __init__(self, tmp: Path, tag: str, args: list[str]) -> None:
        self.out = tmp / f"{tag}.out"
        with open(self.out, "wb") as out, open(tmp / f"{tag}.err", "wb") as err:
            self.proc = subprocess.Popen([sys.executable, str(WORKER), *args], stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)
        self.err = tmp / f"{tag}.err"

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.kill()


def read_model(db_path: Path) -> dict[str, tuple[int, int, int]]:
    """``{account: (balance, applied events, last position)}``."""
    if not db_path.exists():
        return {}
    db = sqlite3.connect(db_path, timeout=30)
    try:
        rows = db.execute("SELECT id, balance, applied, last_position FROM accounts").fetchall()
    except sqlite3.OperationalError:  # the worker has not created the table yet
        return {}
    finally:
        db.close()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def applied_total(db_path: Path) -> int:
    return sum(applied for _, applied, _ in read_model(db_path).values())


async def last_positions(nc: Any, store: JetStreamEventStore) -> dict[str, int]:
    """The stream position of each account's last event (what the read model must remember)."""
    source = EventSource.of(store)
    positions: dict[str, int] = {}
    for actor_id in await store.actor_ids():
        request = msgspec.json.encode({"last_by_subj": source.event_prefix + encode_token(actor_id)})
        msg = await nc.request(f"$JS.API.DIRECT.GET.{source.stream}", request, timeout=5)
        positions[actor_id] = int((msg.headers or {})["Nats-Sequence"])
    return positions


async def test_sigkill_at_random_points_then_restart_ends_exact(nc: Any, nats_url: str, unique_name: str,
                                                                tmp_path: Path, workers: list[Worker]) -> None:
    store = await JetStreamEventStore.create(nc, unique_name, storage="memory")
    await populate_accounts(store, accounts=100, per_account=100)  # 10,000 events
    total = 10_000
    db = tmp_path / "balances.sqlite"
    args = ["--url", nats_url, "--stream", unique_name, "--db", str(db), "--name", "balances",
            "--until-caught-up", "--slow"]
    rng = random.Random(20240601)
    killed_mid_run = 0
    for round_no in range(4):
        done_before = applied_total(db)
        threshold = rng.randint(done_before + 200, done_before + 1800)
        worker = Worker(tmp_path, f"run{round_no}", args)
        workers.append(worker)

        async def passed_threshold(w: Worker = worker, limit: int = threshold) -> bool:
            return not w.alive() or applied_total(db) >= limit

        await wait_for(passed_threshold, timeout=120, interval=0.005, message="the worker to make progress")
        if worker.alive():
            killed_mid_run += 1
        worker.kill()  # SIGKILL: no final checkpoint, no cleanup
        assert worker.proc.returncode in (0, -signal.SIGKILL), worker.err.read_text()
    assert killed_mid_run >= 3
    assert applied_total(db) < total  # the kills really interrupted the projection
    final = Worker(tmp_path, "final", args)
    workers.append(final)
    final.proc.wait(240)
    assert final.proc.returncode == 0, final.err.read_text()
    assert any(line.startswith("DONE ") for line in final.lines())
    model = read_model(db)
    expected = await balances_from_store(store)
    assert {actor: (balance, applied) for actor, (balance, applied, _) in model.items()} == expected
    assert sum(applied for _, applied, _ in model.values()) == total  # each event applied exactly once
    positions = await last_positions(nc, store)
    assert {actor: last for actor, (_, _, last) in model.items()} == positions


async def test_cluster_node_killed_survivor_takes_over_and_resumes(nc: Any, nats_url: str, unique_name: str,
                                                                  tmp_path: Path, workers: list[Worker]) -> None:
    store = await JetStreamEventStore.create(nc, unique_name, storage="memory")
    await populate_accounts(store, accounts=20, per_account=100)
    db = tmp_path / "balances.sqlite"
    lease_bucket = f"leases-{unique_name}"[:60]
    base = ["--url", nats_url, "--stream", unique_name, "--db", str(db), "--name", "balances",
            "--lease-ttl", "2", "--lease-bucket", lease_bucket]
    node_a = Worker(tmp_path, "a", [*base, "--node-id", "node-a"])
    workers.append(node_a)

    async def a_active() -> bool:
        return any(line.startswith("ACTIVE") for line in node_a.lines()) or not node_a.alive()

    await wait_for(a_active, message="node a to become active", timeout=60.0)
    assert node_a.alive(), node_a.err.read_text()
    node_b = Worker(tmp_path, "b", [*base, "--node-id", "node-b"])
    workers.append(node_b)

    async def caught_up_and_saved() -> bool:
        saved = await checkpoints.load(key)
        return applied_total(db) == 2000 and saved is not None and saved.position >= head

    source = EventSource.of(store)
    key = checkpoint_key(source.stream, "balances")
    checkpoints = CheckpointStore(nc)
    await checkpoints.open()
    head = max((await last_positions(nc, store)).values())
    await wait_for(caught_up_and_saved, message="node a to catch up and checkpoint", timeout=60.0)
    lease = ProjectionLease(nc, bucket=lease_bucket, key=key, node_id="observer", ttl=2)
    await lease.open()
    assert await lease.holder() == "node-a"
    assert not any(line.startswith("ACTIVE") for line in node_b.lines())  # exactly one node runs it

    node_a.kill()
    await populate_accounts(store, accounts=20, per_account=50, first_version=101, seed=99)

    async def b_took_over() -> bool:
        return applied_total(db) == 3000

    await wait_for(b_took_over, timeout=90, message="node b to take over and apply the new events")
    assert await lease.holder() == "node-b"
    active_lines = [line for line in node_b.lines() if line.startswith("ACTIVE")]
    assert len(active_lines) == 1
    assert int(active_lines[0].split()[1]) >= head  # resumed from node a's checkpoint, not from 0
    node_b.stop()
    assert node_b.proc.returncode == 0, node_b.err.read_text()
    model = read_model(db)
    expected = await balances_from_store(store)
    assert {actor: (balance, applied) for actor, (balance, applied, _) in model.items()} == expected
