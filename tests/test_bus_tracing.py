"""Trace context through coalesced bus messages: every ``aether.bus.deliver`` span is the child
of its own event's ``aether.bus.publish`` span, whether the event travelled alone (v1, NATS
headers) or in a traced batch (v2, one context per event).

Runs in a subprocess: the OpenTelemetry tracer provider is process-global, and the tracing
tests of other modules install their own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import asyncio, json, sys
    import nats
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from aether import Event, tracing
    from aether.bus import NATSEventBus
    from aether.bus.wire import SINGLE

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracing.set_enabled(True)

    async def main(url):
        pub_nc, sub_nc, raw = [await nats.connect(url) for _ in range(3)]
        kinds = []
        async def on_msg(msg):
            kinds.append(msg.data[1])
        await raw.subscribe("tracebus.>", cb=on_msg)
        await NATSEventBus(raw, subject_prefix="tracebus").flush()
        async with (await NATSEventBus.create(pub_nc, subject_prefix="tracebus") as pub,
                    await NATSEventBus.create(sub_nc, subject_prefix="tracebus") as receiver,
                    receiver.subscribe("t") as sub):
            with trace.get_tracer("test").start_as_current_span("burst"):
                for v in range(1, 41):  # one loop iteration: the first alone, the rest batched
                    await pub.publish("t", Event("Tick", f"actor-{v}", v))
            got = []
            async with asyncio.timeout(30):
                async for event in sub:
                    got.append(event.version)
                    if len(got) == 40:
                        break
            await pub.flush()
            await raw.flush()
        spans = [{"name": s.name, "span_id": s.context.span_id, "trace_id": s.context.trace_id,
                  "parent": s.parent.span_id if s.parent else None,
                  "remote": bool(s.parent and s.parent.is_remote),
                  "id": (s.attributes or {}).get("messaging.message.id"),
                  "actor": (s.attributes or {}).get("aether.actor.id")} for s in exporter.get_finished_spans()]
        print(json.dumps({"got": got, "kinds": kinds, "single": SINGLE, "spans": spans}))
        for nc in (pub_nc, sub_nc, raw):
            await nc.close()

    asyncio.run(main(sys.argv[1]))
''')


def test_each_deliver_span_is_the_child_of_its_publish_span(nats_url: str) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, nats_url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["got"] == list(range(1, 41))
    kinds = result["kinds"]
    assert kinds[0] == result["single"] and len(kinds) < 40, kinds  # the rest travelled coalesced
    spans = result["spans"]
    publish = {s["actor"]: s for s in spans if s["name"] == "aether.bus.publish"}
    deliver = {s["actor"]: s for s in spans if s["name"] == "aether.bus.deliver"}
    burst = next(s for s in spans if s["name"] == "burst")
    assert len(publish) == 40 and len(deliver) == 40
    for actor, span in deliver.items():
        assert span["parent"] == publish[actor]["span_id"], actor
        assert span["remote"] and span["trace_id"] == burst["trace_id"]
        assert publish[actor]["parent"] == burst["span_id"]
