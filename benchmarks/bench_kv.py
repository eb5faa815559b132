"""KV and lease benchmarks (issue 11): Aether's one KV client (``aether._nats.kv``) and lease
(``aether._nats.lease``) against nats-py's ``KeyValue`` doing the same work on the same bucket.

* **put** — sequential unconditional writes of one key (checkpoint saves): ``KvBucket.put`` vs
  ``KeyValue.put``.
* **get** — sequential reads of one key (checkpoint loads, lease reads): ``KvBucket.get`` (direct
  get naming the key, as projection buckets read) vs ``KeyValue.get`` (direct get, as nats-py does
  on a bucket with direct gets).
* **compare-and-set** — sequential ``write(last=revision)`` vs ``KeyValue.update(last=revision)``.
* **lease renewal** — ``Lease.renew`` (compare-and-set + its header + the local deadline) vs
  ``KeyValue.update(last=revision)``, the same write without the lease's bookkeeping.

Alternating rounds, best of each; one server, file storage (as Aether's buckets).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import nats

from aether._nats.kv import KvBucket
from aether._nats.lease import Lease
from aether.testing import NatsServer
from benchmarks._harness import Report, Timer

__all__ = ["run"]

GROUP = "kv"
_names = itertools.count(1)


async def _rate(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    with Timer() as t:
        for i in range(n):
            await op(i)
    return n / t.seconds


async def _round(kv: KvBucket, raw: Any, n: int) -> dict[str, tuple[float, float]]:
    """One round of every row: (Aether, baseline) in operations per second."""
    value = b"x" * 64
    rows = {"put": (await _rate(n, lambda i: kv.put("k", value)), await _rate(n, lambda i: raw.put("k", value))),
            "get": (await _rate(n, lambda i: kv.get("k")), await _rate(n, lambda i: raw.get("k")))}
    revision = [await kv.put("c", value)]

    async def ours(i: int) -> None:
        revision[0] = await kv.write("c", value, last=revision[0])

    async def theirs(i: int) -> None:
        revision[0] = await raw.update("c", value, last=revision[0])

    rows["cas"] = (await _rate(n, ours), await _rate(n, theirs))
    lease = Lease(kv, "lease", ttl=3600, margin=1)
    acquired, _ = await lease.try_acquire(value)
    assert acquired
    aether = await _rate(n, lambda i: lease.renew(value))
    revision[0] = lease.revision

    async def raw_renew(i: int) -> None:
        revision[0] = await raw.update("lease", value, last=revision[0])

    rows["lease"] = (aether, await _rate(n, raw_renew))
    await kv.delete("lease")
    return rows


async def run(report: Report, quick: bool) -> None:
    n = 1500 if quick else 6000
    rounds = 2 if quick else 4
    async with NatsServer() as server:
        nc = await nats.connect(server.url)
        try:
            name = f"bench-kv-{next(_names)}"
            kv = KvBucket(nc, name, msg_ttl=False, keyed_reads=True)
            await kv.ensure()
            raw = await nc.jetstream().key_value(name)
            await kv.put("k", b"0" * 64)
            best: dict[str, tuple[float, float]] = {}
            for _ in range(rounds):
                for row, (aether, baseline) in (await _round(kv, raw, n)).items():
                    a, b = best.get(row, (0.0, 0.0))
                    best[row] = (max(a, aether), max(b, baseline))
            report.add(GROUP, "put, one key, sequential", aether=best["put"][0], baseline=best["put"][1],
                       unit="writes/s", min_ratio=0.9, notes="baseline: nats-py KeyValue.put, same bucket")
            report.add(GROUP, "get, one key, sequential", aether=best["get"][0], baseline=best["get"][1],
                       unit="reads/s", min_ratio=0.9, notes="baseline: nats-py KeyValue.get (direct get)")
            report.add(GROUP, "compare-and-set, sequential", aether=best["cas"][0], baseline=best["cas"][1],
                       unit="writes/s", min_ratio=0.9, notes="baseline: nats-py KeyValue.update(last=)")
            report.add(GROUP, "lease renewal, sequential", aether=best["lease"][0], baseline=best["lease"][1],
                       unit="renewals/s", min_ratio=0.8,
                       notes="baseline: nats-py KeyValue.update(last=) (no deadline, no header)")
            await kv.destroy()
            await kv.aclose()
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
