"""Scale benchmarks (issue 12): does reading one actor cost its own events, or the stream's size?

One file-storage ``NatsServer`` holds two streams built with pipelined raw publishes (see
:mod:`benchmarks._scale_data`): a small and a large one (100k and 1M events; ``--quick``: 10k and
100k), 5,000 interleaved actors, probe actors of 5, 50 and 500 events spread evenly over the whole
stream, and in the small stream a dense actor (every 10th message). Rows, all from the same run:

* warm reads: Aether ``get_events`` (median of alternating runs, after a first read) against the
  raw batched direct get of the actor's subject (``no_hdr``, what Aether did before issue 12) and
  the raw pipelined direct get by sequence with the sequences known in advance (a lower bound);
  then the large/small time ratio of each side (target for Aether: <= 1.5);
* the first read of each probe (it builds the actor's sequence index);
* the 500-event probe against the ``eventsourcing`` SQLite module holding as many events;
* cold reads (first read after a server restart): time and bytes the server read from its
  block files (``rchar`` of the server process), as blocks of the stream's block size;
* ``get_latest_version`` warm and cold;
* dense replay of the small stream's dense actor against the fastest raw read.

``AETHER_BENCH_SCALE_LARGE=10000000`` replaces the large stream's size (the 10M-event run of
docs/benchmarks.md; it needs ~5 GB of disk and a long build); ``AETHER_BENCH_SCALE_WARM_ONLY=1``
skips the eventsourcing reference and the cold rows.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from aether.codec import decode_event
from aether.event import Event
from aether.store import JetStreamEventStore
from aether.testing import NatsServer
from benchmarks._harness import Report, Timer
from benchmarks._scale_data import Layout, build_stream, probe_name, subject
from benchmarks.bench_store import DATA, _Account, _BankApp

__all__ = ["run"]

GROUP = "scale"
_json = msgspec.json.encode


@dataclass(frozen=True)
class Sizes:
    small: int
    large: int
    dense: int
    probes: tuple[int, ...]
    rounds: int


FULL = Sizes(small=100_000, large=1_000_000, dense=10_000, probes=(5, 50, 500), rounds=9)
QUICK = Sizes(small=10_000, large=100_000, dense=1_000, probes=(5, 50, 500), rounds=5)

Read = Callable[[], Awaitable[int]]
# per-reply timeout of the stores: a first read that scans a 10M-event stream whose blocks are not
# in memory outlasts the default 5 s (it does not change any measured figure)
TIMEOUT = 120.0


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1_000}k"


def _rchar(pid: int | None) -> int:
    if pid is None:
        return 0
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def _block_size(server: NatsServer, stream: str) -> float:
    """Average size of the stream's message block files (bytes)."""
    blocks = list(Path(server.store_dir).glob(f"*/streams/{stream}/msgs/*.blk"))
    sizes = [b.stat().st_size for b in blocks]
    return statistics.mean(sizes) if sizes else 8 * 1024 * 1024


# ---- the readers -------------------------------------------------------------------------------
async def _raw_scan(nc: Client, stream: str, actor: str) -> int:
    """Batched direct get of the actor's subject with no_hdr, page after page, decoding every event."""
    api = f"$JS.API.DIRECT.GET.{stream}"
    request: dict[str, Any] = {"seq": 1, "next_by_subj": subject(stream, actor), "batch": 1000, "no_hdr": True}
    count = 0
    while True:
        msgs = await _request_many(nc, api, _json(request))
        status = msgs.pop().headers or {}
        if status.get("Status") not in ("204", "404"):
            raise RuntimeError(f"direct get failed: {status}")
        for msg in msgs:
            decode_event(msg.data)
        count += len(msgs)
        if len(msgs) < 1000:
            return count
        request["seq"] = int(status["Nats-Last-Sequence"]) + 1


async def _request_many(nc: Client, api: str, payload: bytes) -> list[Msg]:
    inbox = nc.new_inbox()
    msgs: list[Msg] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Msg) -> None:
        msgs.append(msg)
        if msg.headers is not None and "Status" in msg.headers and not done.done():
            done.set_result(None)

    sub = await nc.subscribe(inbox, cb=on_msg)
    try:
        await nc.publish(api, payload, reply=inbox)
        await asyncio.wait_for(done, 30)
    finally:
        await sub.unsubscribe()
    return msgs


async def _raw_by_seq(nc: Client, stream: str, seqs: list[int]) -> int:
    """Pipelined direct gets by sequence (no_hdr), the sequences known in advance, decoding every event."""
    inbox = nc.new_inbox()
    payloads: list[bytes] = [b""] * len(seqs)
    left = [len(seqs)]
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cut = len(inbox) + 1

    async def on_msg(msg: Msg) -> None:
        payloads[int(msg.subject[cut:])] = msg.data
        left[0] -= 1
        if not left[0]:
            done.set_result(None)

    sub = await nc.subscribe(inbox + ".*", cb=on_msg)
    api = f"$JS.API.DIRECT.GET.{stream}"
    try:
        for i, seq in enumerate(seqs):
            await nc.publish(api, b'{"seq":%d,"no_hdr":true}' % seq, reply=f"{inbox}.{i}")
        await asyncio.wait_for(done, 30)
    finally:
        await sub.unsubscribe()
    for p in payloads:
        decode_event(p)
    return len(payloads)


def _bind(fn: Callable[..., Awaitable[int]], *args: Any) -> Read:
    async def read() -> int:
        return await fn(*args)
    return read


def _aether(store: JetStreamEventStore, actor: str) -> Read:
    async def read() -> int:
        events: list[Event] = await store.get_events(actor)
        return len(events)
    return read


async def _timed(read: Read, expected: int) -> float:
    with Timer() as t:
        n = await read()
    if n != expected:
        raise RuntimeError(f"read {n} events, expected {expected}")
    return t.seconds


async def _alternate(sides: dict[str, Read], expected: int, rounds: int) -> dict[str, float]:
    """Median seconds per side; sides run in turn, the order reversed every round."""
    names = list(sides)
    for name in names:  # warm-up
        await _timed(sides[name], expected)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(await _timed(sides[name], expected))
    return {n: statistics.median(v) for n, v in times.items()}


# ---- eventsourcing reference ---------------------------------------------------------------------------
def _eventsourcing_read(tmp: str, total: int, history: int, rounds: int) -> float:
    """Median seconds of ``repository.get`` of a ``history``-event aggregate in a SQLite file
    holding ``total`` events (the others written straight through the recorder, 5,000 aggregates)."""
    from eventsourcing.persistence import StoredEvent

    app = _BankApp(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                        "SQLITE_DBNAME": os.path.join(tmp, f"es-{total}.db")})
    try:
        account = _Account()
        for _ in range(history - 1):
            account.deposit(**DATA)
        app.save(account)
        state = b'{"amount":125,"currency":"EUR","account":"ACC-000123","note":"' + b"x" * 64 + b'"}'
        others = [uuid.uuid4() for _ in range(4_999)]
        filler = total - history
        per = filler // len(others)
        chunk: list[StoredEvent] = []
        for v in range(1, per + 1):
            for oid in others:
                chunk.append(StoredEvent(oid, v, "benchmarks.bench_store:_Account.Deposited", state))
            if len(chunk) >= 50_000:
                app.recorder.insert_events(chunk)
                chunk = []
        if chunk:
            app.recorder.insert_events(chunk)
        app.repository.get(account.id)  # warm-up
        times = []
        for _ in range(rounds):
            with Timer() as t:
                copy: _Account = app.repository.get(account.id)
            times.append(t.seconds)
        assert copy.version == history
        return statistics.median(times)
    finally:
        app.close()


# ---- the benchmark ------------------------------------------------------------------------------------
async def _connect(url: str) -> Client:
    return await nats.connect(url, connect_timeout=10, max_reconnect_attempts=0)


async def _warm_rows(report: Report, nc: Client, sizes: Sizes, streams: dict[int, str],
                     layouts: dict[int, Layout]) -> dict[tuple[int, int], dict[str, float]]:
    """Per probe: every side at both sizes runs in one alternation, so the large/small ratios of a
    side are measured under the same machine load."""
    medians: dict[tuple[int, int], dict[str, float]] = {}
    both = (sizes.small, sizes.large)
    for k in sizes.probes:
        actor = probe_name(k)
        sides: dict[str, Read] = {}
        stores = []
        for total in both:
            stream = streams[total]
            store = await JetStreamEventStore.create(nc, stream, timeout=TIMEOUT)
            stores.append(store)
            with Timer() as first:
                n = len(await store.get_events(actor))
            assert n == k
            await store.wait_index_writes()
            report.add(GROUP, f"first read (builds the index), {k}-event actor, {_label(total)} stream",
                       aether=first.seconds * 1000, baseline=None, unit="ms", notes="one run")
            sides[f"aether@{total}"] = _aether(store, actor)
            sides[f"scan@{total}"] = _bind(_raw_scan, nc, stream, actor)
            sides[f"seq@{total}"] = _bind(_raw_by_seq, nc, stream, layouts[total].probes[actor])
        rounds = sizes.rounds * 3 if k <= 50 else sizes.rounds  # short reads: more runs against the noise
        med = await _alternate(sides, k, rounds)
        for total in both:
            mine = {side: med[f"{side}@{total}"] for side in ("aether", "scan", "seq")}
            medians[(total, k)] = mine
            report.add(GROUP, f"warm get_events, {k}-event actor, {_label(total)} stream",
                       aether=mine["aether"] * 1000, baseline=mine["scan"] * 1000, unit="ms",
                       notes=f"median of {rounds}; baseline: raw subject scan (direct get batch, no_hdr) = "
                             f"the read before issue 12; raw by-sequence with known sequences "
                             f"{mine['seq'] * 1000:.2f} ms")
        big, small = medians[(sizes.large, k)], medians[(sizes.small, k)]
        report.add(GROUP, f"warm {k}-event actor: {_label(sizes.large)} time / {_label(sizes.small)} time",
                   aether=big["aether"] / small["aether"], baseline=big["scan"] / small["scan"], unit="x",
                   max_value=1.5, notes="aether column: Aether's ratio (target <= 1.5); baseline column: the raw "
                                        "subject scan's ratio (the growth before issue 12); raw by sequence: "
                                        f"{big['seq'] / small['seq']:.2f}")
        for store in stores:
            await store.aclose()
    return medians


async def _cold(server: NatsServer, stream: str, read: Callable[[Client], Awaitable[int]],
                expected: int) -> tuple[float, float]:
    """(seconds, bytes the server read) of one read right after a restart."""
    await server.restart()
    nc = await _connect(server.url)
    try:
        await nc.request("$JS.API.INFO", b"", timeout=30)
        await asyncio.sleep(0.5)
        before = _rchar(server.pid)
        with Timer() as t:
            n = await read(nc)
        read_bytes = _rchar(server.pid) - before
        if n != expected:
            raise RuntimeError(f"cold read got {n} events, expected {expected}")
        return t.seconds, read_bytes
    finally:
        await nc.close()


async def _cold_rows(report: Report, server: NatsServer, sizes: Sizes, streams: dict[int, str]) -> None:
    cold: dict[tuple[int, int], float] = {}
    cold_runs = 5 if sizes.rounds > 5 else 3
    for total in (sizes.small, sizes.large):
        stream = streams[total]
        block = _block_size(server, stream)
        for k in sizes.probes:
            actor = probe_name(k)

            async def aether_read(nc: Client, s: str = stream, a: str = actor) -> int:
                store = await JetStreamEventStore.create(nc, s, timeout=TIMEOUT)
                try:
                    return len(await store.get_events(a))
                finally:
                    await store.aclose()

            async def scan_read(nc: Client, s: str = stream, a: str = actor) -> int:
                return await _raw_scan(nc, s, a)

            repeats = cold_runs if k == sizes.probes[0] else 1
            runs = [await _cold(server, stream, aether_read, k) for _ in range(repeats)]
            a_s = statistics.median(r[0] for r in runs)
            a_b = statistics.median(r[1] for r in runs)
            r_s, r_b = await _cold(server, stream, scan_read, k)
            cold[(total, k)] = a_s
            report.add(GROUP, f"cold get_events, {k}-event actor, {_label(total)} stream", aether=a_s * 1000,
                       baseline=r_s * 1000, unit="ms",
                       notes=f"first read after a restart (median of {len(runs)} restarts; raw: one); "
                             f"server read {a_b / 1e6:.1f} MB = {a_b / block:.1f} blocks "
                             f"(raw subject scan: {r_b / 1e6:.1f} MB = {r_b / block:.1f} blocks; block "
                             f"{block / 1e6:.1f} MB)")

        async def latest(nc: Client, s: str = stream) -> int:
            store = await JetStreamEventStore.create(nc, s, timeout=TIMEOUT)
            try:
                return await store.get_latest_version(probe_name(sizes.probes[0]))
            finally:
                await store.aclose()

        l_s, l_b = await _cold(server, stream, latest, sizes.probes[0])
        report.add(GROUP, f"cold get_latest_version, {_label(total)} stream", aether=l_s * 1000, baseline=None,
                   unit="ms", notes=f"server read {l_b / 1e6:.1f} MB = {l_b / block:.1f} blocks (the one holding "
                                    "the actor's last event)")
    for k in sizes.probes:
        report.add(GROUP, f"cold {k}-event actor: {_label(sizes.large)} time / {_label(sizes.small)} time",
                   aether=cold[(sizes.large, k)] / cold[(sizes.small, k)], baseline=None, unit="x",
                   # with --quick the small stream is less than one block: no like-for-like target
                   max_value=2.0 if k == sizes.probes[0] and sizes.small >= 100_000 else None,
                   notes="target <= 2 for the smallest actor; larger actors are bound by the blocks holding "
                         "their events (see the blocks in the rows above)")


async def _first_reads(report: Report, nc: Client, sizes: Sizes, streams: dict[int, str]) -> None:
    """Read every probe once (as the warm rows do first), so that the cold rows find their indexes."""
    for total in (sizes.small, sizes.large):
        store = await JetStreamEventStore.create(nc, streams[total], timeout=TIMEOUT)
        for k in sizes.probes:
            with Timer() as t:
                n = len(await store.get_events(probe_name(k)))
            if n != k:
                raise RuntimeError(f"first read got {n} events, expected {k}")
            report.add(GROUP, f"first get_events, {k}-event actor, {_label(total)} stream (writes the index)",
                       aether=t.seconds * 1000, baseline=None, unit="ms", notes="cold-only run: before the restarts")
        await store._history.wait_index_writes()
        await store.aclose()


async def run(report: Report, quick: bool) -> None:
    """Build the streams, then add the warm, reference, cold and dense rows to ``report``."""
    sizes = QUICK if quick else FULL
    large = os.environ.get("AETHER_BENCH_SCALE_LARGE")  # e.g. 10000000 for the documented 10M run
    if large:
        sizes = Sizes(small=sizes.small, large=int(large), dense=sizes.dense, probes=sizes.probes,
                      rounds=sizes.rounds)
    started = time.perf_counter()
    async with NatsServer(startup_timeout=600) as server:  # a restart recovers the large stream
        nc = await _connect(server.url)
        streams: dict[int, str] = {}
        layouts: dict[int, Layout] = {}
        for total in (sizes.small, sizes.large):
            stream = f"SCALE_{_label(total)}_{os.getpid()}"
            with Timer() as t:
                layouts[total] = await build_stream(nc, stream, total, list(sizes.probes),
                                                    dense=sizes.dense if total == sizes.small else 0)
            streams[total] = stream
            print(f"# built {stream}: {total:,} events in {t.seconds:.1f} s", flush=True)
        if os.environ.get("AETHER_BENCH_SCALE_COLD_ONLY"):  # e.g. the 10M cold rows: skip the warm rows
            try:
                await _first_reads(report, nc, sizes, streams)
            finally:
                await nc.close()
            await _cold_rows(report, server, sizes, streams)
            report.add(GROUP, "module wall time", aether=time.perf_counter() - started, baseline=None, unit="s",
                       notes="cold rows only (AETHER_BENCH_SCALE_COLD_ONLY)")
            return
        try:
            medians = await _warm_rows(report, nc, sizes, streams, layouts)
            # latest version, warm
            store = await JetStreamEventStore.create(nc, streams[sizes.large], timeout=TIMEOUT)
            probe = probe_name(sizes.probes[-1])
            with Timer() as t:
                for _ in range(200):
                    await store.get_latest_version(probe)
            report.add(GROUP, f"warm get_latest_version, {_label(sizes.large)} stream", aether=t.seconds / 200 * 1000,
                       baseline=None, unit="ms", notes="mean of 200 sequential calls")
            await store.aclose()
            # dense replay
            dense = f"dense-{sizes.dense}"
            store = await JetStreamEventStore.create(nc, streams[sizes.small], timeout=TIMEOUT)
            await store.get_events(dense)
            await store.wait_index_writes()
            dense_seqs = layouts[sizes.small].probes[dense]
            s = streams[sizes.small]
            med = await _alternate({"aether": _aether(store, dense), "scan": lambda: _raw_scan(nc, s, dense),
                                    "seq": lambda: _raw_by_seq(nc, s, dense_seqs)}, sizes.dense, sizes.rounds * 2)
            fastest = min(med["scan"], med["seq"])
            report.add(GROUP, f"dense replay: {sizes.dense:,}-event actor in a {_label(sizes.small)} stream",
                       aether=sizes.dense / med["aether"], baseline=sizes.dense / fastest, unit="events/s",
                       min_ratio=0.80, notes=f"median of {sizes.rounds * 2}; baseline: fastest raw read (subject scan "
                                             f"{sizes.dense / med['scan']:,.0f}/s, by sequence "
                                             f"{sizes.dense / med['seq']:,.0f}/s)")
            await store.aclose()
        finally:
            await nc.close()
        if os.environ.get("AETHER_BENCH_SCALE_WARM_ONLY"):
            report.add(GROUP, "module wall time", aether=time.perf_counter() - started, baseline=None, unit="s",
                       notes="warm rows only (AETHER_BENCH_SCALE_WARM_ONLY)")
            return
        # eventsourcing reference: the largest probe at the large size
        version = importlib.metadata.version("eventsourcing")
        k = sizes.probes[-1]
        with tempfile.TemporaryDirectory(prefix="aether-bench-es-") as tmp:
            es = _eventsourcing_read(tmp, sizes.large, k, sizes.rounds)
        ours = medians[(sizes.large, k)]["aether"]
        report.add(GROUP, f"ref: {k}-event actor, {_label(sizes.large)} events — Aether get_events vs eventsourcing "
                          "SQLite repository.get", aether=ours * 1000, baseline=es * 1000, unit="ms", max_ratio=3.0,
                   notes=f"eventsourcing {version}, SQLite file holding {sizes.large:,} events of 5,000 aggregates "
                         "(repository.get decodes and folds; Aether only decodes)")
        await _cold_rows(report, server, sizes, streams)
    report.add(GROUP, "module wall time", aether=time.perf_counter() - started, baseline=None, unit="s")
