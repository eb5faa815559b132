"""Large interleaved streams for the scale benchmark (built fast with pipelined raw publishes).

A stream of ``total`` events holds ``ACTORS`` actors whose events interleave round-robin, plus
probe actors whose events are spread evenly over the whole stream (and, optionally, one dense
actor holding every 10th message). Every message carries the headers Aether stores with an
event (``Nats-Msg-Id`` and an exact ``Nats-Expected-Last-Subject-Sequence``), exactly as the
store writes them, so the stream is a history "written before" any read-side change.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from aether.codec import encode_event
from aether.event import Event
from aether.names import encode_token

__all__ = ["ACTORS", "DATA", "META", "PREFIX", "Layout", "build_stream", "probe_name", "stream_config", "subject"]

PREFIX = "aether"
ACTORS = 5_000
DATA: dict[str, Any] = {"amount": 125, "currency": "EUR", "account": "ACC-000123", "note": "x" * 64}
META: dict[str, str] = {"correlation_id": "c0ffee00-0000-4000-8000-000000000001"}
_WINDOW = 4_000
_json = msgspec.json.encode


def probe_name(events: int) -> str:
    return f"probe-{events}"


def subject(stream: str, actor: str) -> str:
    return f"{PREFIX}.{stream}.e.{encode_token(actor)}"


def stream_config(stream: str) -> dict[str, Any]:
    """The configuration JetStreamEventStore gives its stream before this change (default options)."""
    return {"name": stream, "subjects": [f"{PREFIX}.{stream}.>"], "retention": "limits", "storage": "file",
            "num_replicas": 1, "max_age": 0, "max_bytes": -1, "max_msgs": -1,
            "duplicate_window": 120 * 1_000_000_000, "discard": "old", "allow_direct": True, "allow_atomic": True}


@dataclass
class Layout:
    """Where each probe's events sit: actor -> list of stream sequences (version i at index i-1)."""

    total: int
    probes: dict[str, list[int]] = field(default_factory=dict)


def _plan(total: int, probe_sizes: list[int], dense: int, actors: int = ACTORS) -> tuple[list[str], Layout]:
    """The actor of every position 1..total."""
    owner: list[str | None] = [None] * (total + 1)
    layout = Layout(total)
    if dense:
        name = f"dense-{dense}"
        seqs = [10 * i + 5 for i in range(dense)]
        for s in seqs:
            owner[s] = name
        layout.probes[name] = seqs
    for k in probe_sizes:
        name = probe_name(k)
        seqs = []
        for i in range(k):
            s = int((i + 0.5) * total / k) + 1
            while owner[s] is not None:  # nudge past a taken slot
                s += 1
            owner[s] = name
            seqs.append(s)
        layout.probes[name] = seqs
    fillers = actors - len(layout.probes)
    n = 0
    out: list[str] = []
    for s in range(1, total + 1):
        o = owner[s]
        if o is None:
            o = f"actor-{n % fillers}"
            n += 1
        out.append(o)
    return out, layout


async def build_stream(nc: Client, stream: str, total: int, probe_sizes: list[int], dense: int = 0,
                       actors: int = ACTORS) -> Layout:
    """Create ``stream`` and fill it with ``total`` events of ``actors`` actors (see the module docstring)."""
    msg = await nc.request(f"$JS.API.STREAM.CREATE.{stream}", _json(stream_config(stream)), timeout=30)
    reply = msgspec.json.decode(msg.data)
    if reply.get("error"):
        raise RuntimeError(f"stream create failed: {reply['error']}")
    owners, layout = _plan(total, probe_sizes, dense, actors)
    loop = asyncio.get_running_loop()
    inbox = nc.new_inbox()
    state = {"acked": 0, "errors": 0}
    first_error: list[bytes] = []
    room = asyncio.Event()
    room.set()
    finished: asyncio.Future[None] = loop.create_future()

    async def on_ack(m: Msg) -> None:
        state["acked"] += 1
        if b'"error"' in m.data:
            state["errors"] += 1
            first_error.append(m.data)
        if state["acked"] == total and not finished.done():
            finished.set_result(None)
        room.set()

    sub = await nc.subscribe(inbox, cb=on_ack)
    last: dict[str, int] = {}
    versions: dict[str, int] = {}
    subjects: dict[str, str] = {}
    publish = nc.publish
    try:
        for seq, actor in enumerate(owners, start=1):
            version = versions.get(actor, 0) + 1
            versions[actor] = version
            subj = subjects.get(actor)
            if subj is None:
                subj = subjects[actor] = subject(stream, actor)
            event = Event("Deposited", actor, version, data=DATA, metadata=META)
            headers = {"Nats-Msg-Id": event.id, "Nats-Expected-Last-Subject-Sequence": str(last.get(actor, 0))}
            last[actor] = seq
            while seq - state["acked"] > _WINDOW:
                room.clear()
                await room.wait()
            await publish(subj, encode_event(event), reply=inbox, headers=headers)
        await asyncio.wait_for(finished, 120)
    finally:
        await sub.unsubscribe()
    if state["errors"]:
        raise RuntimeError(f"{state['errors']} publishes failed, first: {first_error[0]!r}")
    return layout
