"""A projection worker process for the crash and failover tests (not collected by pytest).

It projects account balances (``Deposited`` / ``Withdrawn`` events) into a SQLite read model,
applying each event idempotently: an account row remembers the position of the last event
applied to it, and a redelivered event (position <= that) is ignored. Lines written to stdout:
``ACTIVE <position>`` when this node starts running the projection, ``DONE <position>`` when
caught up (with ``--until-caught-up``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
import sys

import nats

from aether.event import Event
from aether.projection import EventSource, Projection, ProjectionOptions, ProjectionRunner, RetryPolicy

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY, balance INTEGER NOT NULL, last_position INTEGER NOT NULL, applied INTEGER NOT NULL
);
"""


def open_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")  # a SIGKILLed process loses nothing the OS already has
    db.executescript(SCHEMA)
    return db


def build_projection(name: str, db: sqlite3.Connection, slow: bool) -> Projection:
    projection = Projection(name)

    @projection.on("Deposited", "Withdrawn")
    async def apply(event: Event, position: int) -> None:
        amount = int(event.data["amount"])
        if event.event_type == "Withdrawn":
            amount = -amount
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT last_position FROM accounts WHERE id = ?", (event.actor_id,)).fetchone()
        if row is not None and row[0] >= position:
            db.execute("ROLLBACK")  # already applied before a crash: at-least-once, applied once
            return
        db.execute(
            "INSERT INTO accounts (id, balance, last_position, applied) VALUES (?, ?, ?, 1) "
            "ON CONFLICT(id) DO UPDATE SET balance = balance + excluded.balance, "
            "last_position = excluded.last_position, applied = applied + 1",
            (event.actor_id, amount, position),
        )
        db.execute("COMMIT")
        if slow and position % 10 == 0:
            await asyncio.sleep(0.001)

    return projection


class ActiveReporter:
    def __init__(self) -> None:
        self.runner: ProjectionRunner | None = None

    def on_progress(self, projection: str, processed: int, position: int, lag: int) -> None:
        pass

    def on_retry(self, projection: str) -> None:
        pass

    def on_dead_letter(self, projection: str, kind: str) -> None:
        pass

    def on_active(self, projection: str, active: bool) -> None:
        if active and self.runner is not None:
            print(f"ACTIVE {self.runner.position}", flush=True)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--name", default="balances")
    parser.add_argument("--node-id", default=None)
    parser.add_argument("--lease-ttl", type=int, default=2)
    parser.add_argument("--lease-bucket", default=None)
    parser.add_argument("--checkpoint-bucket", default="aether-projections")
    parser.add_argument("--until-caught-up", action="store_true")
    parser.add_argument("--slow", action="store_true")
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--partitions", type=int, default=1)
    args = parser.parse_args()

    db = open_db(args.db)
    nc = await nats.connect(args.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    options = ProjectionOptions(checkpoint_every=250, checkpoint_interval=0.2, heartbeat=1.0,
                                lease_ttl=args.lease_ttl, lease_bucket=args.lease_bucket,
                                checkpoint_bucket=args.checkpoint_bucket,
                                retry=RetryPolicy(max_attempts=3, initial_backoff=0.01))
    reporter = ActiveReporter()
    source = EventSource(args.stream, args.namespace, partitions=args.partitions)
    runner = ProjectionRunner(nc, build_projection(args.name, db, args.slow), source, options=options,
                              observer=reporter, node_id=args.node_id)
    reporter.runner = runner
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await runner.start()
        if args.until_caught_up:
            position = await runner.catch_up(timeout=240)
            print(f"DONE {position}", flush=True)
        else:
            await stop.wait()
    finally:
        await runner.stop()
        await nc.close()
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
