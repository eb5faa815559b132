"""Minimal reproduction: on an R3 stream a *direct get* answered by a follower can miss a write
that was already acknowledged, and ``min_last_seq`` (which would make a lagging replica defer
to the leader) is ignored by nats-server 2.12+ (it was removed before 2.12.0).

    python scripts/repro_stale_direct_get.py [--writes 2000]

Starts a 3-server cluster on loopback, creates an R3 stream with ``allow_direct``, connects one
client to a *follower* of the stream, and for each write: publishes one message (the leader acks
it after quorum), then at once reads the subject's last message with a direct get (answered by
the follower the client is connected to) carrying ``min_last_seq`` = the acked sequence. Prints how
many reads returned an older message than the one just acknowledged. Plain nats-py, no Aether
code involved except the test-server launcher.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import nats
import nats.errors

from aether.testing import NatsCluster


async def main(writes: int) -> int:
    async with NatsCluster(3) as cluster:
        admin = await nats.connect(servers=cluster.urls)
        js = admin.jetstream()
        for attempt in range(100):  # the cluster may still be forming
            try:
                await js.add_stream(name="STALE", subjects=["stale.>"], num_replicas=3, allow_direct=True)
                break
            except nats.errors.Error:
                if attempt == 99:
                    raise
                await asyncio.sleep(0.2)
        info = json.loads((await admin.request("$JS.API.STREAM.INFO.STALE", b"", timeout=10)).data)
        leader = info["cluster"]["leader"]
        follower = next(s for s in cluster.servers if s.server_name != leader)
        nc = await nats.connect(follower.url)  # this client's direct gets are answered locally
        print(f"stream leader {leader}; client connected to follower {follower.server_name}; "
              f"nats-server {nc.connected_server_version}")
        stale = 0
        for i in range(writes):
            ack = json.loads((await nc.request("stale.a", str(i).encode(), timeout=10)).data)
            reply = await nc.request("$JS.API.DIRECT.GET.STALE",
                                     json.dumps({"last_by_subj": "stale.a", "min_last_seq": ack["seq"]}).encode(),
                                     timeout=10)
            got = int((reply.headers or {}).get("Nats-Sequence", 0))
            if got < ack["seq"]:
                stale += 1
                if stale <= 5:
                    print(f"  write {i}: acknowledged seq {ack['seq']}, direct get (min_last_seq={ack['seq']}) "
                          f"returned seq {got}")
        print(f"{stale} of {writes} direct gets right after an acknowledged write returned an older message")
        await nc.close()
        await admin.close()
        return stale


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=2000)
    asyncio.run(main(parser.parse_args().writes))
