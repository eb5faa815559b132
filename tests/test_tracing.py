"""OpenTelemetry spans across processes: one trace from the client, through the owner node's handler
and its append, to the projection (in the client's process) that handles the appended event.

The owner runs in a subprocess with the SDK's in-memory exporter and writes its spans to a JSON
file when stopped; this process records its own spans with another in-memory exporter. The test
joins both and checks the parent/child links across the process boundary, both ways.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nats
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from aether import Event, tracing
from aether.bus import NATSEventBus
from aether.cluster import ClusterClient
from aether.errors import VersionConflictError
from aether.projection import Projection, ProjectionRunner
from aether.store import JetStreamEventStore

pytestmark = pytest.mark.anyio

HERE = Path(__file__).resolve().parent


class Switch(Sampler):
    """Records spans only while ``on`` (the provider is global: other tests must not pay for it)."""

    on = False

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state: Any = None) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE if self.on else Decision.DROP, attributes)

    def get_description(self) -> str:
        return "switch"


_SWITCH = Switch()
_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider(sampler=_SWITCH)
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    _SWITCH.on = True
    tracing.set_enabled(True)
    try:
        yield _EXPORTER
    finally:
        # the provider stays set for the rest of the session: turn Aether's hooks off again so that
        # later tests run as they would without a provider (no spans, no trace headers)
        tracing.set_enabled(False)
        _SWITCH.on = False
        _EXPORTER.clear()


def record(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {"name": span.name, "kind": span.kind.name, "trace_id": f"{context.trace_id:032x}",
            "span_id": f"{context.span_id:016x}",
            "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
            "remote_parent": bool(span.parent is not None and span.parent.is_remote),
            "attributes": dict(span.attributes or {}), "service": "client"}


def start_owner(nats_url: str, cluster: str, stream: str, spans_file: Path, log: Path) -> subprocess.Popen[str]:
    with open(log, "wb") as err:
        return subprocess.Popen([sys.executable, str(HERE / "_traced_node.py"), "--nats-url", nats_url, "--cluster",
                                 cluster, "--stream", stream, "--spans", str(spans_file)],
                                stdout=subprocess.PIPE, stderr=err, text=True)


def one(records: list[dict[str, Any]], name: str, **attributes: Any) -> dict[str, Any]:
    found = [r for r in records if r["name"] == name
             and all(r["attributes"].get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, f"{name} {attributes}: {len(found)} spans in {[r['name'] for r in records]}"
    return found[0]


async def test_one_trace_across_processes(nats_url: str, unique_name: str, tmp_path: Path,
                                          spans: InMemorySpanExporter) -> None:
    assert tracing.enabled()
    cluster, stream = unique_name[:40], unique_name[:60]
    spans_file = tmp_path / "owner-spans.jsonl"
    owner = await asyncio.to_thread(start_owner, nats_url, cluster, stream, spans_file, tmp_path / "owner.log")
    try:
        assert owner.stdout is not None
        ready = await asyncio.to_thread(owner.stdout.readline)
        assert json.loads(ready) == {"ready": True}, (tmp_path / "owner.log").read_text()
        nc = await nats.connect(nats_url)
        try:
            handled: list[Event] = []
            projection = Projection("pings")

            @projection.on("Pinged")
            async def pinged(event: Event, position: int) -> None:
                handled.append(event)

            delivered: list[Event] = []
            store = await JetStreamEventStore.create(nc, stream)
            async with (await NATSEventBus.create(nc) as bus, bus.subscribe("traced") as subscription,
                        ClusterClient(nc, cluster=cluster) as client,
                        ProjectionRunner(nc, projection, store) as runner):
                await client.wait_ready()
                with trace.get_tracer("test").start_as_current_span("user-operation") as root:
                    assert await client.request("acct-1", b"hello") == b"v1"
                await runner.wait_until(1, timeout=30)
                async with asyncio.timeout(30):
                    async for event in subscription:
                        delivered.append(event)
                        break
            assert [e.actor_id for e in handled] == ["acct-1"] and delivered[0].id == handled[0].id
        finally:
            await nc.close()
    finally:
        owner.terminate()
        await asyncio.to_thread(owner.wait, 30)
        if owner.stdout is not None:
            owner.stdout.close()
    assert owner.returncode == 0, (tmp_path / "owner.log").read_text()
    theirs = [json.loads(line) for line in spans_file.read_text().splitlines()]
    ours = [record(s) for s in spans.get_finished_spans()]

    trace_id = f"{root.get_span_context().trace_id:032x}"
    user = one(ours, "user-operation")
    request = one(ours, "aether.request", **{"aether.actor.id": "acct-1"})
    route = one(ours, "aether.route", **{"aether.actor.id": "acct-1"})
    handle = one(theirs, "aether.handle", **{"aether.actor.id": "acct-1"})
    read = one(theirs, "aether.store.read", **{"aether.actor.id": "acct-1"})
    append = one(theirs, "aether.store.append", **{"aether.actor.id": "acct-1"})
    publish = one(theirs, "aether.bus.publish", **{"aether.actor.id": "acct-1"})
    deliver = one(ours, "aether.bus.deliver", **{"aether.actor.id": "acct-1"})
    project = one(ours, "aether.projection.handle", **{"aether.actor.id": "acct-1"})

    # one trace, end to end, across both processes
    for span in (user, request, route, handle, read, append, publish, deliver, project):
        assert span["trace_id"] == trace_id, span["name"]
    # client process -> owner process -> client process
    assert request["parent_id"] == user["span_id"] and route["parent_id"] == request["span_id"]
    assert handle["parent_id"] == route["span_id"] and handle["remote_parent"] and handle["service"] == "owner"
    assert read["parent_id"] == handle["span_id"] and append["parent_id"] == handle["span_id"]
    assert publish["parent_id"] == handle["span_id"]
    assert project["parent_id"] == append["span_id"] and project["remote_parent"]
    assert deliver["parent_id"] == publish["span_id"] and deliver["remote_parent"]
    # kinds and messaging attributes
    assert [s["kind"] for s in (request, route, handle, append, publish, deliver, project)] == \
        ["CLIENT", "PRODUCER", "SERVER", "PRODUCER", "PRODUCER", "CONSUMER", "CONSUMER"]
    assert append["attributes"]["messaging.system"] == "nats"
    assert append["attributes"]["messaging.destination.name"] == stream
    assert append["attributes"]["aether.event.version"] == 1
    assert append["attributes"]["messaging.message.id"] == handled[0].id
    assert handle["attributes"]["aether.node.id"] == "owner"
    assert handle["attributes"]["aether.shard"] == route["attributes"]["aether.shard"]
    assert route["attributes"]["aether.node.id"] == "owner"
    assert project["attributes"]["aether.projection"] == "pings"
    assert project["attributes"]["aether.stream.sequence"] == 1
    # the event itself is unchanged: the context travelled in headers
    assert handled[0].metadata == {}


async def test_failures_are_recorded(nc: Any, unique_name: str, spans: InMemorySpanExporter) -> None:
    store = await JetStreamEventStore.create(nc, unique_name, storage="memory")
    await store.save_event(Event("E", "a", 1))
    with pytest.raises(VersionConflictError):
        await store.save_event(Event("E", "a", 1))
    appends = [s for s in spans.get_finished_spans() if s.name == "aether.store.append"]
    assert [s.status.status_code.name for s in appends] == ["UNSET", "ERROR"]
    assert appends[1].events and appends[1].events[0].name == "exception"


async def test_disabled_tracing_records_nothing(nc: Any, unique_name: str, spans: InMemorySpanExporter) -> None:
    store = await JetStreamEventStore.create(nc, unique_name, storage="memory")
    with tracing.disabled():
        assert tracing.TRACER is None and not tracing.enabled()
        await store.save_event(Event("E", "a", 1))
        assert await store.get_events("a")
    assert tracing.enabled()
    assert spans.get_finished_spans() == ()
    await store.get_events("a")
    assert [s.name for s in spans.get_finished_spans()] == ["aether.store.read"]
