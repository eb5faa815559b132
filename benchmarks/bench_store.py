"""Core store benchmarks (issue 2): Aether's stores against raw nats-py doing the same work.

Every JetStream row starts its own ``aether.testing.NatsServer`` (file storage), warms both
sides up, then alternates baseline and Aether measurements (the machine is shared and noisy)
on a fresh stream each time, and reports the best run of each side. The baselines publish the
same bytes Aether would (an equivalent Event encoded once with :mod:`aether.codec`) with the
same headers, so the ratio isolates what Aether's own Python code costs. See
``docs/benchmarks.md`` for what each row measures and how to reproduce it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from nats.aio.client import Client
from nats.aio.msg import Msg

from aether.codec import decode_event, encode_event
from aether.event import Event
from aether.names import encode_token, stream_name
from aether.store import InMemoryEventStore, JetStreamEventStore
from aether.testing import NatsServer
from benchmarks._harness import Report, Timer, peak_rss_mib

__all__ = ["run"]

GROUP = "store"
PREFIX = "aether"  # JetStreamOptions().subject_prefix
DATA: dict[str, Any] = {"amount": 125, "currency": "EUR", "account": "ACC-000123", "note": "x" * 64}
META: dict[str, str] = {"correlation_id": "c0ffee00-0000-4000-8000-000000000001"}
_json = msgspec.json.encode
_unjson = msgspec.json.decode
_names = itertools.count(1)


@dataclass(frozen=True)
class Sizes:
    rounds: int          # alternating baseline/Aether pairs per row
    seq_events: int      # sequential save_event
    seq_events_synced: int  # the same with sync_interval: always (fsync per write)
    actors: int          # concurrent save_event: number of actors ...
    per_actor: int       # ... and events per actor
    batches: int         # save_events: number of batches of BATCH events
    history: int         # get_events: events of the actor read
    stream_total: int    # get_events: events in the stream
    memory_events: int   # InMemoryEventStore sequential save_event
    es_sqlite: int       # eventsourcing reference: SQLite appends
    es_popo: int         # eventsourcing reference: POPO appends


FULL = Sizes(rounds=5, seq_events=5_000, seq_events_synced=2_000, actors=1_000, per_actor=10, batches=100,
             history=10_000, stream_total=100_000, memory_events=200_000, es_sqlite=5_000, es_popo=10_000)
QUICK = Sizes(rounds=3, seq_events=600, seq_events_synced=300, actors=1_000, per_actor=2, batches=10,
              history=2_000, stream_total=20_000, memory_events=50_000, es_sqlite=300, es_popo=2_000)
BATCH = 100
DIRECT_GET_BATCH = 1000  # the raw direct-get baseline's page size (Aether uses JetStreamOptions.page_size)

Measure = Callable[[Client, str], Awaitable[float]]


# ---- shared helpers -------------------------------------------------------------------------
def _event(actor: str, version: int) -> Event:
    return Event("Deposited", actor, version, data=DATA, metadata=META)


def _payload(actor: str) -> bytes:
    """The bytes an equivalent Aether event has on the wire (encoded once for the baselines)."""
    return encode_event(_event(actor, 1))


def _fresh(tag: str) -> str:
    return f"bench_{tag}_{os.getpid()}_{next(_names)}"


def _subject(stream: str, actor: str) -> str:
    return f"{PREFIX}.{stream}.e.{encode_token(actor)}"


def _stream_config(stream: str) -> dict[str, Any]:
    """The configuration JetStreamEventStore gives its stream (default options)."""
    return {"name": stream, "subjects": [f"{PREFIX}.{stream}.>"], "retention": "limits", "storage": "file",
            "num_replicas": 1, "max_age": 0, "max_bytes": -1, "max_msgs": -1,
            "duplicate_window": 120 * 1_000_000_000, "discard": "old", "allow_direct": True, "allow_atomic": True}


async def _js_api(nc: Client, call: str, body: dict[str, Any] | None = None) -> Any:
    msg = await nc.request(f"$JS.API.{call}", _json(body) if body is not None else b"", timeout=30)
    reply = _unjson(msg.data)
    if isinstance(reply, dict) and reply.get("error"):
        raise RuntimeError(f"$JS.API.{call}: {reply['error']}")
    return reply


async def _create_stream(nc: Client, stream: str) -> None:
    await _js_api(nc, f"STREAM.CREATE.{stream}", _stream_config(stream))


async def _delete_stream(nc: Client, stream: str) -> None:
    with contextlib.suppress(Exception):
        await _js_api(nc, f"STREAM.DELETE.{stream}")


def _ids(tag: str) -> Iterator[str]:
    """Unique Nats-Msg-Id values for the baselines (Aether sends the event id)."""
    base = f"{tag}-{os.getpid()}-{time.monotonic_ns():x}-"
    return (f"{base}{i}" for i in itertools.count())


async def _connect(url: str) -> Client:
    return await nats.connect(url, connect_timeout=10, max_reconnect_attempts=0)


Runner = Callable[[NatsServer, str, Measure], Awaitable[float]]


async def _once(server: NatsServer, tag: str, measure: Measure) -> float:
    """One measurement on a fresh stream and a fresh connection; the stream is deleted after."""
    nc = await _connect(server.url)
    stream = stream_name(_fresh(tag), None)
    try:
        return await measure(nc, stream)
    finally:
        await _delete_stream(nc, stream)
        await nc.close()


@dataclass(frozen=True)
class Side:
    """One contender of a row: ``key`` is "aether" or a baseline variant."""

    key: str
    label: str
    measure: Measure
    warmup: Measure


async def _alternate(server: NatsServer, tag: str, rounds: int, sides: Sequence[Side],
                     runner: Runner = _once) -> dict[str, list[float]]:
    """Warm every side up, then run them in turn, reversing the order every round."""
    for side in sides:
        await runner(server, tag + "w", side.warmup)
    results: dict[str, list[float]] = {side.key: [] for side in sides}
    for r in range(rounds):
        for side in sides if r % 2 == 0 else list(reversed(sides)):
            results[side.key].append(await runner(server, tag, side.measure))
    return results


def _add(report: Report, name: str, sides: Sequence[Side], results: dict[str, list[float]],
         min_ratio: float | None) -> float:
    """Report Aether's best run against the best run of the fastest baseline variant."""
    best = {key: max(values) for key, values in results.items()}
    baselines = [side for side in sides if side.key != "aether"]
    chosen = max(baselines, key=lambda side: best[side.key])
    median_ratio = statistics.median(results["aether"]) / statistics.median(results[chosen.key])
    notes = (f"best of {len(results['aether'])} alternating runs (median ratio {median_ratio:.2f}); "
             f"baseline: {chosen.label}")
    others = [f"{side.label} {best[side.key]:,.0f}/s" for side in baselines if side is not chosen]
    if others:
        notes += f" (slower variants: {'; '.join(others)})"
    report.add(GROUP, name, aether=best["aether"], baseline=best[chosen.key], unit="events/s",
               min_ratio=min_ratio, notes=notes)
    return best["aether"]


# ---- 1. sequential save_event, one actor --------------------------------------------------------
def _seq_aether(n: int) -> Measure:
    async def measure(nc: Client, stream: str) -> float:
        store = await JetStreamEventStore.create(nc, stream)
        await store.get_latest_version("warmup")  # opens the reply inbox outside the timing
        events = [_event("seq-actor", v) for v in range(1, n + 1)]
        save = store.save_event
        with Timer() as t:
            for e in events:
                await save(e)
        return n / t.seconds
    return measure


def _seq_baseline(n: int) -> Measure:
    async def measure(nc: Client, stream: str) -> float:
        await _create_stream(nc, stream)
        js = nc.jetstream()
        subject = _subject(stream, "seq-actor")
        payload = _payload("seq-actor")
        ids = _ids("seq")
        await nc.request("$JS.API.INFO", b"")  # opens the reply inbox outside the timing
        seq = 0
        with Timer() as t:
            for _ in range(n):
                ack = await js.publish(subject, payload, headers={
                    "Nats-Msg-Id": next(ids), "Nats-Expected-Last-Subject-Sequence": str(seq)})
                seq = ack.seq
        assert seq == n, seq
        return n / t.seconds
    return measure


async def bench_sequential(report: Report, sizes: Sizes, sync_interval: str | None = None) -> float:
    n = sizes.seq_events if sync_interval is None else sizes.seq_events_synced
    warm = max(n // 5, 100)
    sides = [Side("js.publish", "js.publish with Expected-Last-Subject-Sequence + Msg-Id headers",
                  _seq_baseline(n), _seq_baseline(warm)),
             Side("aether", "JetStreamEventStore.save_event", _seq_aether(n), _seq_aether(warm))]
    async with NatsServer(sync_interval=sync_interval) as server:
        results = await _alternate(server, "seq", sizes.rounds, sides)
    if sync_interval is None:
        return _add(report, f"sequential save_event, 1 actor, file ({n:,} events)", sides, results, 0.90)
    return _add(report, f"sequential save_event, 1 actor, file, sync_interval={sync_interval} ({n:,} events)",
                sides, results, None)


# ---- 2. concurrent save_event over many actors ----------------------------------------------------
def _conc_aether(actors: int, per_actor: int) -> Measure:
    async def measure(nc: Client, stream: str) -> float:
        store = await JetStreamEventStore.create(nc, stream)
        await store.get_latest_version("warmup")
        histories = [[_event(f"actor-{a}", v) for v in range(1, per_actor + 1)] for a in range(actors)]

        async def writer(events: list[Event]) -> None:
            for e in events:
                await store.save_event(e)

        with Timer() as t:
            await asyncio.gather(*(writer(h) for h in histories))
        return actors * per_actor / t.seconds
    return measure


def _conc_rounds(actors: int, per_actor: int) -> Measure:
    """Rounds: one js.publish_async per actor (each with its expected sequence), then gather the acks."""
    async def measure(nc: Client, stream: str) -> float:
        await _create_stream(nc, stream)
        js = nc.jetstream(publish_async_max_pending=max(4000, 2 * actors))
        subjects = [_subject(stream, f"actor-{a}") for a in range(actors)]
        payload = _payload("actor-0")
        ids = _ids("conc")
        seqs = [0] * actors
        publish = js.publish_async
        await js.publish_async_completed()  # opens the ack inbox outside the timing
        with Timer() as t:
            for _ in range(per_actor):
                futures = [await publish(subjects[a], payload, headers={
                    "Nats-Msg-Id": next(ids), "Nats-Expected-Last-Subject-Sequence": str(seqs[a])})
                    for a in range(actors)]
                acks = await asyncio.gather(*futures)
                seqs = [ack.seq for ack in acks]
        assert max(seqs) == actors * per_actor, max(seqs)
        return actors * per_actor / t.seconds
    return measure


def _conc_tasks(actors: int, per_actor: int) -> Measure:
    """One task per actor, each pipelining through js.publish_async and awaiting its own ack."""
    async def measure(nc: Client, stream: str) -> float:
        await _create_stream(nc, stream)
        js = nc.jetstream(publish_async_max_pending=max(4000, 2 * actors))
        subjects = [_subject(stream, f"actor-{a}") for a in range(actors)]
        payload = _payload("actor-0")
        ids = _ids("conc")
        publish = js.publish_async
        last: list[int] = []

        async def writer(subject: str) -> None:
            seq = 0
            for _ in range(per_actor):
                future = await publish(subject, payload, headers={
                    "Nats-Msg-Id": next(ids), "Nats-Expected-Last-Subject-Sequence": str(seq)})
                seq = (await future).seq
            last.append(seq)

        await js.publish_async_completed()
        with Timer() as t:
            await asyncio.gather(*(writer(s) for s in subjects))
        assert max(last) == actors * per_actor, max(last)
        return actors * per_actor / t.seconds
    return measure


async def bench_concurrent(report: Report, sizes: Sizes) -> None:
    a, k = sizes.actors, sizes.per_actor
    sides = [Side("tasks", "js.publish_async, one task per actor", _conc_tasks(a, k), _conc_tasks(a, 1)),
             Side("aether", "save_event, one task per actor", _conc_aether(a, k), _conc_aether(a, 1)),
             Side("rounds", "js.publish_async for every actor + gather, per round", _conc_rounds(a, k),
                  _conc_rounds(a, 1))]
    async with NatsServer() as server:
        results = await _alternate(server, "conc", sizes.rounds, sides)
    _add(report, f"concurrent save_event, {a:,} actors x {k}", sides, results, 0.80)


# ---- 3. save_events of 100 --------------------------------------------------------------------------
def _batch_aether(batches: int) -> Measure:
    async def measure(nc: Client, stream: str) -> float:
        store = await JetStreamEventStore.create(nc, stream)
        await store.get_latest_version("warmup")
        events = [_event("batch-actor", v) for v in range(1, batches * BATCH + 1)]
        chunks = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
        with Timer() as t:
            for chunk in chunks:
                await store.save_events(chunk)
        return batches * BATCH / t.seconds
    return measure


def _batch_baseline(batches: int) -> Measure:
    """Hand-written atomic batch: 99 nc.publish + 1 commit request, expected sequence on the first."""
    async def measure(nc: Client, stream: str) -> float:
        await _create_stream(nc, stream)
        subject = _subject(stream, "batch-actor")
        payload = _payload("batch-actor")
        ids = _ids("batch")
        batch_ids = _ids("b")
        await nc.request("$JS.API.INFO", b"")
        seq = 0
        publish = nc.publish
        with Timer() as t:
            for _ in range(batches):
                bid = next(batch_ids)
                for i in range(1, BATCH):
                    headers = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(i), "Nats-Msg-Id": next(ids)}
                    if i == 1:
                        headers["Nats-Expected-Last-Subject-Sequence"] = str(seq)
                    await publish(subject, payload, headers=headers)
                msg = await nc.request(subject, payload, timeout=5, headers={
                    "Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(BATCH), "Nats-Batch-Commit": "1",
                    "Nats-Msg-Id": next(ids)})
                ack = _unjson(msg.data)
                if "error" in ack:
                    raise RuntimeError(f"atomic batch failed: {ack['error']}")
                seq = ack["seq"]
        assert seq == batches * BATCH, seq
        return batches * BATCH / t.seconds
    return measure


async def bench_batch(report: Report, sizes: Sizes) -> None:
    b = sizes.batches
    warm = max(b // 5, 3)
    sides = [Side("raw", f"hand-written atomic batch (nc.publish x{BATCH - 1} + commit request)",
                  _batch_baseline(b), _batch_baseline(warm)),
             Side("aether", "save_events", _batch_aether(b), _batch_aether(warm))]
    async with NatsServer() as server:
        results = await _alternate(server, "batch", sizes.rounds, sides)
    _add(report, f"save_events of {BATCH} ({b * BATCH:,} events)", sides, results, 0.80)


# ---- 4. get_events of one actor in a large stream ---------------------------------------------------
TARGET = "reader-target"


async def _populate(nc: Client, stream: str, history: int, total: int) -> None:
    """``history`` events of TARGET interleaved with events of other actors, ``total`` in all.

    Every message carries the headers Aether stores with an event (``Nats-Msg-Id`` and
    ``Nats-Expected-Last-Subject-Sequence``); the expected sequences are exact because one
    connection publishes in order into a fresh stream (a wrong one would fail the publish).
    """
    actors = [TARGET, *(f"other-{o}" for o in range(max(total // history - 1, 0)))]
    width = len(actors)
    js = nc.jetstream(publish_async_max_pending=8000)
    subjects = [_subject(stream, a) for a in actors]
    pending: list[asyncio.Future[Any]] = []
    for v in range(1, history + 1):
        for i, (actor, subject) in enumerate(zip(actors, subjects, strict=True)):
            e = _event(actor, v)
            expected = (v - 2) * width + i + 1 if v > 1 else 0
            pending.append(await js.publish_async(subject, encode_event(e), headers={
                "Nats-Msg-Id": e.id, "Nats-Expected-Last-Subject-Sequence": str(expected)}))
        if len(pending) >= 4000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


def _read_aether(stream: str, history: int) -> Measure:
    async def measure(nc: Client, _unused: str) -> float:
        store = await JetStreamEventStore.create(nc, stream)
        await store.get_latest_version("warmup")
        with Timer() as t:
            events = await store.get_events(TARGET)
        assert len(events) == history and events[-1].version == history, len(events)
        return history / t.seconds
    return measure


def _read_direct(stream: str, history: int, batch: int, no_headers: bool) -> Measure:
    """Raw batched direct get of the subject, page after page, decoding every event.

    With ``no_headers`` the request sets ``"no_hdr": true``: the server then sends bare payloads
    (no stored or Nats-* headers per message) and only the end-of-batch status carries
    ``Nats-Last-Sequence``, which is all paging needs. nats-py parses every message's headers in
    Python, so this is much cheaper per event.
    """
    async def measure(nc: Client, _unused: str) -> float:
        subject = _subject(stream, TARGET)
        api = f"$JS.API.DIRECT.GET.{stream}"
        loop = asyncio.get_running_loop()
        inbox = nc.new_inbox()
        msgs: list[Msg] = []
        done: list[asyncio.Future[None]] = []

        async def on_msg(msg: Msg) -> None:
            msgs.append(msg)
            headers = msg.headers
            if headers is not None and "Status" in headers:
                done[-1].set_result(None)

        sub = await nc.subscribe(inbox, cb=on_msg)
        events: list[Event] = []
        append = events.append
        request: dict[str, Any] = {"seq": 1, "next_by_subj": subject, "batch": batch}
        if no_headers:
            request["no_hdr"] = True
        try:
            with Timer() as t:
                while True:
                    msgs.clear()
                    done.append(loop.create_future())
                    await nc.publish(api, _json(request), reply=inbox)
                    await asyncio.wait_for(done[-1], 10)
                    status = msgs.pop().headers or {}
                    if status.get("Status") not in ("204", "404"):
                        raise RuntimeError(f"direct get failed: {status}")
                    for msg in msgs:
                        append(decode_event(msg.data, stream=stream))
                    if len(msgs) < batch or (not no_headers and status.get("Nats-Num-Pending") == "0"):
                        break
                    request["seq"] = int(status["Nats-Last-Sequence"]) + 1
        finally:
            await sub.unsubscribe()
        assert len(events) == history and events[-1].version == history, len(events)
        return history / t.seconds
    return measure


def _read_ordered(stream: str, history: int) -> Measure:
    """Raw ordered push consumer filtered on the subject, decoding every event until none is pending."""
    async def measure(nc: Client, _unused: str) -> float:
        js = nc.jetstream()
        subject = _subject(stream, TARGET)
        events: list[Event] = []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_msg(msg: Msg) -> None:
            events.append(decode_event(msg.data, stream=stream))
            if msg.reply.endswith(".0") and not done.done():  # last token of the ack subject: num pending
                done.set_result(None)

        with Timer() as t:
            sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, cb=on_msg)
            await asyncio.wait_for(done, 30)
        await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, sub._consumer)
        assert len(events) == history and events[-1].version == history, len(events)
        return history / t.seconds
    return measure


async def _read_once(server: NatsServer, _tag: str, measure: Measure) -> float:
    nc = await _connect(server.url)
    try:
        return await measure(nc, "")
    finally:
        await nc.close()


async def bench_read(report: Report, sizes: Sizes) -> float:
    h, total = sizes.history, sizes.stream_total
    async with NatsServer() as server:
        nc = await _connect(server.url)
        stream = stream_name(_fresh("read"), None)
        try:
            await _create_stream(nc, stream)
            await _populate(nc, stream, h, total)
            direct, direct_nohdr = (_read_direct(stream, h, DIRECT_GET_BATCH, flag) for flag in (False, True))
            aether, ordered = _read_aether(stream, h), _read_ordered(stream, h)
            sides = [  # reads change nothing: each side warms up with its own measurement
                Side("direct", f"batched direct get ({DIRECT_GET_BATCH}/page)", direct, direct),
                Side("aether", "get_events", aether, aether),
                Side("ordered", "ordered consumer with filter subject", ordered, ordered),
                Side("direct_nohdr", f"batched direct get with no_hdr ({DIRECT_GET_BATCH}/page)", direct_nohdr,
                     direct_nohdr),
            ]
            results = await _alternate(server, "read", sizes.rounds, sides, runner=_read_once)
        finally:
            await _delete_stream(nc, stream)
            await nc.close()
    return _add(report, f"get_events of {h:,} in a {total:,}-event stream", sides, results, 0.80)


# ---- 5. InMemoryEventStore ---------------------------------------------------------------------------
async def _memory_rate(n: int) -> tuple[float, float]:
    """(save_event rate, get_events + fold rate) of one actor with ``n`` events."""
    store = InMemoryEventStore()
    events = [_event("mem-actor", v) for v in range(1, n + 1)]
    save = store.save_event
    with Timer() as t:
        for e in events:
            await save(e)
    with Timer() as r:
        balance = 0
        for e in await store.get_events("mem-actor"):
            balance += e.data["amount"]
    assert balance == n * DATA["amount"]
    return n / t.seconds, n / r.seconds


async def bench_memory(report: Report, sizes: Sizes) -> tuple[float, float]:
    """Report the sequential save_event row; return (best save rate, best get_events + fold rate)."""
    await _memory_rate(min(sizes.memory_events, 10_000))  # warm-up
    runs = [await _memory_rate(sizes.memory_events) for _ in range(sizes.rounds)]
    save, read = max(r[0] for r in runs), max(r[1] for r in runs)
    report.add(GROUP, f"InMemoryEventStore sequential save_event ({sizes.memory_events:,} events)", aether=save,
               baseline=None, unit="events/s", min_value=150_000,
               notes=f"best of {len(runs)}; prebuilt events of one actor")
    return save, read


# ---- 6. eventsourcing reference -----------------------------------------------------------------------
class _Account(Aggregate):
    """The eventsourcing-library twin of the benchmark's events (same data fields)."""

    def __init__(self) -> None:
        self.balance = 0

    @event("Deposited")
    def deposit(self, amount: int, currency: str, account: str, note: str) -> None:
        self.balance += amount


class _BankApp(Application[Any]):
    pass


def _eventsourcing_rates(env: dict[str, str], n: int) -> tuple[float, float]:
    """(sequential save rate, replay rate) of one aggregate with ``n`` events (created + n-1 deposits)."""
    app = _BankApp(env=env)
    try:
        account = _Account()
        with Timer() as t:
            app.save(account)
            for _ in range(n - 1):
                account.deposit(**DATA)
                app.save(account)
        with Timer() as r:
            copy: _Account = app.repository.get(account.id)
        assert copy.version == n and copy.balance == (n - 1) * DATA["amount"]
        return n / t.seconds, n / r.seconds
    finally:
        app.close()


def _best_eventsourcing(env_for: Callable[[int], dict[str, str]], n: int, rounds: int) -> tuple[float, float]:
    _eventsourcing_rates(env_for(-1), max(n // 10, 50))  # warm-up
    runs = [_eventsourcing_rates(env_for(i), n) for i in range(rounds)]
    return max(r[0] for r in runs), max(r[1] for r in runs)


def bench_eventsourcing(report: Report, sizes: Sizes, aether_synced: float, aether_read: float,
                        memory_seq: float, memory_read: float) -> None:
    version = importlib.metadata.version("eventsourcing")
    with tempfile.TemporaryDirectory(prefix="aether-bench-es-") as tmp:
        def sqlite_env(i: int) -> dict[str, str]:
            return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": os.path.join(tmp, f"es{i}.db")}

        sq_save, sq_read = _best_eventsourcing(sqlite_env, sizes.es_sqlite, min(sizes.rounds, 3))
    popo_save, popo_read = _best_eventsourcing(lambda i: {"PERSISTENCE_MODULE": "eventsourcing.popo"},
                                               sizes.es_popo, min(sizes.rounds, 3))
    ref = f"reference, no target; baseline column = eventsourcing {version}"
    report.add(GROUP, "ref: durable sequential append — Aether (sync_interval=always) vs eventsourcing SQLite",
               aether=aether_synced, baseline=sq_save, unit="events/s",
               notes=f"{ref}; app.save() per event, {sizes.es_sqlite:,} events, SQLite WAL with synchronous=FULL "
                     "(fsync per commit, like sync_interval=always)")
    report.add(GROUP, "ref: replay one aggregate — Aether JetStream get_events vs eventsourcing SQLite",
               aether=aether_read, baseline=sq_read, unit="events/s",
               notes=f"{ref}; repository.get() of {sizes.es_sqlite:,} events (decodes and folds)")
    report.add(GROUP, "ref: sequential append — Aether InMemoryEventStore vs eventsourcing POPO",
               aether=memory_seq, baseline=popo_save, unit="events/s",
               notes=f"{ref}; app.save() per event, {sizes.es_popo:,} events; Aether keeps the Event objects, "
                     "eventsourcing serializes each one")
    report.add(GROUP, "ref: replay one aggregate — Aether InMemoryEventStore get_events+fold vs eventsourcing POPO",
               aether=memory_read, baseline=popo_read, unit="events/s",
               notes=f"{ref}; repository.get() of {sizes.es_popo:,} events (deserializes); Aether only folds"
                     " the stored objects")


# ---- entry point ----------------------------------------------------------------------------------------
async def run(report: Report, quick: bool) -> None:
    """Run every store benchmark (see the module docstring) and add the rows to ``report``."""
    sizes = QUICK if quick else FULL
    started = time.perf_counter()
    await bench_sequential(report, sizes)
    aether_synced = await bench_sequential(report, sizes, sync_interval="always")
    await bench_concurrent(report, sizes)
    await bench_batch(report, sizes)
    aether_read = await bench_read(report, sizes)
    memory_seq, memory_read = await bench_memory(report, sizes)
    bench_eventsourcing(report, sizes, aether_synced, aether_read, memory_seq, memory_read)
    report.add(GROUP, "peak RSS of the benchmark process", aether=peak_rss_mib(), baseline=None, unit="MiB",
               notes=f"after the store rows; module wall time {time.perf_counter() - started:.0f} s")

