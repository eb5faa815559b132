"""eventsourcing persistence module benchmarks (issue 16): the same ``eventsourcing`` application on
``aether.integrations.eventsourcing`` (NATS JetStream) and on eventsourcing's own SQLite module
(a database file in WAL mode with ``synchronous=FULL``: an fsync per commit), in the same run.

* **save, one new aggregate per save** — ``app.save(aggregate)`` with one event, single thread.
  JetStream twice: the server's default (fsync every 2 minutes, what ``nats-server`` ships with)
  and ``sync_interval: always`` (an fsync per write, SQLite's durability).
* **save of 2 events** — the same with two events per save: on JetStream an atomic batch, which
  on file storage costs the server milliseconds (about an fsync; a single-message save does not).
* **save, 4 threads** — four threads saving concurrently (SQLite serialises its writers).
* **contended saves** — two applications (two connections, like two processes) with two threads
  each, loading one of 8 hot aggregates, adding an event and saving, retrying on
  ``IntegrityError``: conflicts are detected by the JetStream server (SQLite: its unique index).
* **repository.get** — rebuilding a 20-event aggregate (no snapshot, no cache).
* **select_notifications** — reading the whole application log in pages of 500.
* **R3 rows** — ``repository.get`` and ``select_notifications`` again on an R3 stream of a
  3-server cluster, the reading application connected to a *follower*: on a replicated stream
  every read also asks the stream leader where the subject (or the stream) ends and reads what a
  lagging replica's pages lack from it (docs/integrations.md). Compare with the R1 rows above.

The "Aether" column is the JetStream module, the "baseline" column SQLite; ratio = Aether / SQLite
(above 1: the JetStream module does more per second). Each row warms both up, then alternates
which goes first and keeps the best of each.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, OperationalError

from aether._nats import JsApi
from aether.connect import close, connect
from aether.testing import NatsCluster, NatsServer
from benchmarks._harness import Report, Timer

__all__ = ["run"]

GROUP = "eventsourcing"


class Bench(Application[UUID]):
    pass


def _sqlite_env(folder: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": os.path.join(folder, "bench.db"),
            "SQLITE_LOCK_TIMEOUT": "30"}


def _nats_env(url: str, stream: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "aether.integrations.eventsourcing", "AETHER_NATS_URL": url,
            "AETHER_ES_STREAM": stream}


def _saves(app: Application[UUID], n: int) -> float:
    with Timer() as t:
        for _ in range(n):
            app.save(Aggregate())
    return n / t.seconds


def _two_event_saves(app: Application[UUID], n: int) -> float:
    with Timer() as t:
        for _ in range(n):
            aggregate = Aggregate()
            aggregate.trigger_event(Aggregate.Event)
            app.save(aggregate)
    return n / t.seconds


def _threaded_saves(app: Application[UUID], n: int, threads: int = 4) -> float:
    def work() -> None:
        for _ in range(n // threads):
            app.save(Aggregate())

    workers = [threading.Thread(target=work) for _ in range(threads)]
    with Timer() as t:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return (n // threads) * threads / t.seconds


def _contended(apps: list[Application[UUID]], ids: list[UUID], n: int, conflicts: list[int]) -> float:
    """Two threads per application, each ``get`` + one event + ``save`` on a random hot aggregate,
    retrying on ``IntegrityError`` (another writer saved that version first)."""
    per_thread = n // (2 * len(apps))
    lock = threading.Lock()

    def work(app: Application[UUID], seed: int) -> None:
        chooser = random.Random(seed)
        done = 0
        while done < per_thread:
            aggregate: Aggregate = app.repository.get(chooser.choice(ids))
            aggregate.trigger_event(Aggregate.Event)
            try:
                app.save(aggregate)
                done += 1
            except IntegrityError:
                with lock:
                    conflicts[0] += 1

    workers = [threading.Thread(target=work, args=(app, i * 2 + k)) for i, app in enumerate(apps) for k in range(2)]
    with Timer() as t:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return per_thread * len(workers) / t.seconds


def _long_aggregates(app: Application[UUID], count: int, length: int) -> list[UUID]:
    ids = []
    for _ in range(count):
        aggregate = Aggregate()
        for _ in range(length - 1):
            aggregate.trigger_event(Aggregate.Event)
        app.save(aggregate)
        ids.append(aggregate.id)
    return ids


def _gets(app: Application[UUID], ids: list[UUID], rounds: int) -> float:
    with Timer() as t:
        for _ in range(rounds):
            for aggregate_id in ids:
                app.repository.get(aggregate_id)
    return rounds * len(ids) / t.seconds


def _read_log(app: Application[UUID]) -> float:
    recorder: Any = app.recorder
    total = 0
    with Timer() as t:
        start = 1
        while True:
            page = recorder.select_notifications(start, 500)
            if not page:
                break
            total += len(page)
            start = page[-1].id + 1
    return total / t.seconds


def _pair(aether: Callable[[], float], baseline: Callable[[], float], rounds: int) -> tuple[float, float]:
    """Best of ``rounds`` runs of each, after a warm-up run of each, alternating which goes first."""
    aether()
    baseline()
    a_best = b_best = 0.0
    for round_ in range(rounds):
        order = [(True, aether), (False, baseline)]
        if round_ % 2:
            order.reverse()
        for is_aether, measure in order:
            value = measure()
            if is_aether:
                a_best = max(a_best, value)
            else:
                b_best = max(b_best, value)
    return a_best, b_best


def _sqlite_synchronous(path: str) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        connection.close()


def _stream_leader(url: str, stream: str) -> str:
    async def ask() -> str:
        nc = await connect(url)
        api = JsApi(nc)
        try:
            return str((await api.api(f"STREAM.INFO.{stream}"))["cluster"]["leader"])
        finally:
            await api.aclose()
            await close(nc)

    return asyncio.run(ask())


def _r3_writer(env: dict[str, str]) -> Bench:
    """The application that creates the R3 stream (the cluster's meta leader may still be settling)."""
    for _ in range(150):
        try:
            return Bench(env=env)
        except OperationalError:
            time.sleep(0.2)
    return Bench(env=env)


def _measure_replicated(report: Report, quick: bool, cluster: NatsCluster, sqlite_app: Application[UUID],
                        sqlite_ids: list[UUID], repeats: int) -> None:
    """The read rows on an R3 stream, read through a follower (the writer is on the first server)."""
    stream = "bench-es-r3"
    writer = _r3_writer({**_nats_env(",".join(cluster.urls), stream), "AETHER_ES_REPLICAS": "3"})
    try:
        count, length = len(sqlite_ids), 20
        ids = _long_aggregates(writer, count, length)
        leader = _stream_leader(cluster.urls[0], stream)
    finally:
        writer.close()
    follower = next(s for s in cluster.servers if s.server_name != leader)
    reader = Bench(env=_nats_env(follower.url, stream))
    try:
        rounds = 2 if quick else 5
        nats_gets, sqlite_gets = _pair(lambda: _gets(reader, ids, rounds),
                                       lambda: _gets(sqlite_app, sqlite_ids, rounds), repeats)
        report.add(GROUP, f"repository.get, {length}-event aggregate, R3 stream, client on a follower",
                   aether=nats_gets, baseline=sqlite_gets, unit="gets/s",
                   notes="each read also asks the stream leader where the aggregate ends")
        nats_log, sqlite_log = _pair(lambda: _read_log(reader), lambda: _read_log(sqlite_app), repeats)
        report.add(GROUP, "select_notifications, pages of 500, R3 stream, client on a follower", aether=nats_log,
                   baseline=sqlite_log, unit="notifications/s",
                   notes=f"JetStream log {count * length} events; each page also asks the leader (STREAM.INFO)")
    finally:
        reader.close()


def _measure(report: Report, quick: bool, url: str, url_always: str, folder: str, cluster: NatsCluster) -> None:
    n = 200 if quick else 1000
    repeats = 2 if quick else 3
    sqlite_app = Bench(env=_sqlite_env(folder))
    nats_app = Bench(env=_nats_env(url, "bench-es"))
    always_app = Bench(env=_nats_env(url_always, "bench-es-always"))
    try:
        sync = _sqlite_synchronous(os.path.join(folder, "bench.db"))
        nats_saves, sqlite_saves = _pair(lambda: _saves(nats_app, n), lambda: _saves(sqlite_app, n), repeats)
        report.add(GROUP, "save, 1 aggregate/save, 1 thread (JetStream default sync)", aether=nats_saves,
                   baseline=sqlite_saves, unit="saves/s",
                   notes=f"SQLite file, WAL, synchronous={sync} (fsync per commit); nats-server sync every 2 min")
        always_saves, sqlite_saves = _pair(lambda: _saves(always_app, n), lambda: _saves(sqlite_app, n), repeats)
        report.add(GROUP, "save, 1 aggregate/save, 1 thread (JetStream sync_interval: always)", aether=always_saves,
                   baseline=sqlite_saves, unit="saves/s", notes="both fsync every commit")
        nats_pairs, sqlite_pairs = _pair(lambda: _two_event_saves(nats_app, n // 2),
                                         lambda: _two_event_saves(sqlite_app, n // 2), repeats)
        report.add(GROUP, "save, 1 aggregate with 2 events/save, 1 thread (JetStream default sync)",
                   aether=nats_pairs, baseline=sqlite_pairs, unit="saves/s",
                   notes="two messages: a JetStream atomic batch (one event: a plain publish)")
        nats_threads, sqlite_threads = _pair(lambda: _threaded_saves(nats_app, n),
                                             lambda: _threaded_saves(sqlite_app, n), repeats)
        report.add(GROUP, "save, 1 aggregate/save, 4 threads (JetStream default sync)", aether=nats_threads,
                   baseline=sqlite_threads, unit="saves/s", notes="one connection, one loop thread per factory")
        hot_nats = _long_aggregates(nats_app, 8, 1)
        hot_sqlite = _long_aggregates(sqlite_app, 8, 1)
        nats_peer = Bench(env=_nats_env(url, "bench-es"))  # a second "process": own connection and cache
        sqlite_peer = Bench(env=_sqlite_env(folder))
        try:
            nats_conflicts, sqlite_conflicts = [0], [0]
            contended = n // 4
            nats_hot, sqlite_hot = _pair(lambda: _contended([nats_app, nats_peer], hot_nats, contended, nats_conflicts),
                                         lambda: _contended([sqlite_app, sqlite_peer], hot_sqlite, contended,
                                                            sqlite_conflicts), repeats)
        finally:
            nats_peer.close()
            sqlite_peer.close()
        report.add(GROUP, "contended saves: 2 apps x 2 threads on 8 hot aggregates", aether=nats_hot,
                   baseline=sqlite_hot, unit="saves/s",
                   notes=f"get + save, retried on IntegrityError; conflicts: JetStream {nats_conflicts[0]}, "
                         f"SQLite {sqlite_conflicts[0]} (all rounds)")
        count, length = (20, 20) if quick else (50, 20)
        sqlite_ids = _long_aggregates(sqlite_app, count, length)
        nats_ids = _long_aggregates(nats_app, count, length)
        rounds = 2 if quick else 5
        nats_gets, sqlite_gets = _pair(lambda: _gets(nats_app, nats_ids, rounds),
                                       lambda: _gets(sqlite_app, sqlite_ids, rounds), repeats)
        report.add(GROUP, f"repository.get, {length}-event aggregate", aether=nats_gets, baseline=sqlite_gets,
                   unit="gets/s", notes="no snapshot, no aggregate cache")
        nats_log, sqlite_log = _pair(lambda: _read_log(nats_app), lambda: _read_log(sqlite_app), repeats)
        events = len(sqlite_app.recorder.select_notifications(1, 10**6))
        report.add(GROUP, "select_notifications, pages of 500", aether=nats_log, baseline=sqlite_log,
                   unit="notifications/s", notes=f"whole log of each app ({events} events)")
        _measure_replicated(report, quick, cluster, sqlite_app, sqlite_ids, repeats)
    finally:
        sqlite_app.close()
        nats_app.close()
        always_app.close()


async def run(report: Report, quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-es-") as folder:
        async with NatsServer() as server, NatsServer(sync_interval="always") as durable, NatsCluster(3) as cluster:
            await asyncio.to_thread(_measure, report, quick, server.url, durable.url, folder, cluster)
