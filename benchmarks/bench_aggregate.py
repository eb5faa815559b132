"""Aggregate benchmarks (issue 5): what the aggregate layer costs over the raw store, and what
snapshots save.

* **commands/s, single writer** — ``Repository.execute`` (cached aggregate, typed payloads,
  command ids) against the hand-written loop a user would write without it: keep the version,
  build an ``Event``, ``save_event``. Same server, same store, alternating runs, best of each.
* **load a long history** — ``Repository.load`` with a snapshot near the end (snapshot + tail)
  against a full replay of the same history through the same aggregate.
* **concurrent writers** — two repositories on two connections racing on 16 hot actors:
  each actor written by both; commands/s and conflicts retried (no baseline: the figure shows
  that retries stay cheap and nothing is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import nats

from aether.aggregate import Aggregate, EventPayload, Repository, applies
from aether.event import Event
from aether.store import JetStreamEventStore
from aether.testing import NatsServer
from benchmarks._harness import Report, Timer

__all__ = ["run"]

GROUP = "aggregate"
_names = itertools.count(1)


class Deposited(EventPayload, frozen=True):
    amount: int


class Account(Aggregate):
    balance: int = 0

    def deposit(self, amount: int) -> None:
        self.record(Deposited(amount=amount))

    @applies(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount


def _stream() -> str:
    return f"bagg{next(_names)}"


async def _raw_loop(store: JetStreamEventStore, actor: str, n: int) -> float:
    version = 0
    with Timer() as t:
        for _ in range(n):
            version += 1
            await store.save_event(Event("Deposited", actor, version, {"amount": 1}))
    return n / t.seconds


async def _repo_loop(store: JetStreamEventStore, actor: str, n: int) -> float:
    repo = Repository(store, Account, cache_size=16)
    with Timer() as t:
        for i in range(n):
            await repo.execute(actor, lambda a: a.deposit(1), command_id=f"{actor}-{i}")
    await repo.aclose()
    return n / t.seconds


async def run(report: Report, quick: bool) -> None:
    commands = 1500 if quick else 6000
    rounds = 2 if quick else 4
    history = 2000 if quick else 10_000
    async with NatsServer() as server:
        nc = await nats.connect(server.url)
        nc2 = await nats.connect(server.url)
        try:
            # -- single writer ---------------------------------------------------------------
            raw_best = repo_best = 0.0
            for _ in range(rounds):
                store = await JetStreamEventStore.create(nc, _stream(), storage="memory")
                raw_best = max(raw_best, await _raw_loop(store, "raw", commands))
                repo_best = max(repo_best, await _repo_loop(store, "repo", commands))
                await store.aclose()
            report.add(GROUP, "Repository.execute, single writer (cached)", aether=repo_best, baseline=raw_best,
                       unit="commands/s", min_ratio=0.6,
                       notes="baseline: hand-kept version + Event + save_event, same store")

            # -- snapshot + tail vs full replay ------------------------------------------------
            store = await JetStreamEventStore.create(nc, _stream(), storage="memory")
            batch = 500
            for first in range(1, history + 1, batch):
                await store.save_events([Event("Deposited", "long", v, {"amount": 1}, {"aether.schema": "1"})
                                         for v in range(first, min(first + batch, history + 1))])
            writer = Repository(store, Account)
            await writer.snapshot("long")
            await writer.execute("long", lambda a: a.deposit(1))  # a tail of 1 event after the snapshot
            replay_best = tail_best = float("inf")
            for _ in range(rounds):
                with Timer() as full:
                    account = Account("long")
                    for event in await store.get_events("long"):
                        account.apply(event)
                replay_best = min(replay_best, full.seconds)
                fresh = Repository(store, Account)
                with Timer() as snap:
                    loaded = await fresh.load("long")
                tail_best = min(tail_best, snap.seconds)
                assert loaded.balance == account.balance == history + 1
            report.add(GROUP, f"load a {history:,}-event history: snapshot + tail", aether=tail_best * 1000,
                       baseline=replay_best * 1000, unit="ms", max_ratio=0.2,
                       notes="baseline: full replay of the same history")
            await store.aclose()

            # -- two repositories racing ------------------------------------------------------------
            name = _stream()
            s1 = await JetStreamEventStore.create(nc, name, storage="memory")
            s2 = await JetStreamEventStore.create(nc2, name, storage="memory")
            repos = [Repository(s, Account, max_attempts=1000, cache_size=100, snapshot_every=100) for s in (s1, s2)]
            per_worker = commands // 16

            async def worker(repo: Repository[Account], actor: str) -> None:
                for _ in range(per_worker):
                    await repo.execute(actor, lambda a: a.deposit(1))

            with Timer() as t:
                await asyncio.gather(*(worker(repos[i % 2], f"hot-{i // 2}") for i in range(16)))
            conflicts = sum(r.stats.conflicts for r in repos)
            for r in repos:
                await r.aclose()
            balances = [(await repos[0].load(f"hot-{k}")).balance for k in range(8)]
            assert balances == [2 * per_worker] * 8, balances
            report.add(GROUP, "2 repositories racing on 8 actors", aether=16 * per_worker / t.seconds,
                       baseline=None, unit="commands/s",
                       notes=f"{conflicts} conflicts retried; no command lost")
            for s in (s1, s2):
                await s.aclose()
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
                await nc2.close()
