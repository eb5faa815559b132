"""An owner node with OpenTelemetry's SDK configured, for the cross-process tracing test.

Runs one ClusterManager (the only member, so it owns every shard) whose handler appends an
event to the store and publishes it on the bus. Records spans with the SDK's in-memory exporter
and, when stopped (SIGTERM), writes them as JSON lines to ``--spans``.

    python tests/_traced_node.py --nats-url URL --cluster C --stream S --spans FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

import nats
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aether import Event
from aether.bus import NATSEventBus
from aether.cluster import ActorRequest, ClusterManager
from aether.store import JetStreamEventStore


def span_records(exporter: InMemorySpanExporter) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    for span in exporter.get_finished_spans():
        context = span.get_span_context()
        assert context is not None
        records.append({
            "name": span.name, "kind": span.kind.name, "trace_id": f"{context.trace_id:032x}",
            "span_id": f"{context.span_id:016x}",
            "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
            "remote_parent": bool(span.parent is not None and span.parent.is_remote),
            "attributes": dict(span.attributes or {}),
            "service": (span.resource.attributes or {}).get("service.name")})
    return records


async def main() -> None:
    parser = argparse.ArgumentParser()
    for option in ("--nats-url", "--cluster", "--stream", "--spans"):
        parser.add_argument(option, required=True)
    args = parser.parse_args()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "owner"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    nc = await nats.connect(args.nats_url)
    store = await JetStreamEventStore.create(nc, args.stream)
    bus = await NATSEventBus.create(nc)

    async def handle(request: ActorRequest) -> bytes:
        version = await store.get_latest_version(request.actor_id) + 1
        event = Event("Pinged", request.actor_id, version, {"payload": request.payload.decode()})
        await store.save_event(event)
        await bus.publish("traced", event)
        return f"v{version}".encode()

    async with ClusterManager(nc, node_id="owner", cluster=args.cluster, handler=handle) as node:
        await node.wait_ready(timeout=30)
        print(json.dumps({"ready": True}), flush=True)
        await stop.wait()
    await bus.aclose()
    await nc.close()
    provider.force_flush()
    text = "".join(json.dumps(record) + "\n" for record in span_records(exporter))
    await asyncio.to_thread(Path(args.spans).write_text, text)
    print(json.dumps({"spans": len(exporter.get_finished_spans())}), flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
