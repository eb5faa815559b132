"""aether._nats.headers: the same header dicts as nats-py's own parser, on real and arbitrary blocks."""

from __future__ import annotations

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from aether._nats import Inbox, parse_header_lines
from aether.server import NatsServer

_PARTS = st.sampled_from([b"Nats-Subject", b"Nats-Sequence", b"a b", b"K\tey", b" X ", b"\xc3\xa9t\xc3\xa9", b"",
                          b":", b": ", b"\r", b"\n", b"\r\n", b"v\xff\xfe", b"x\x1cy", b"val", b"12", b"\x85",
                          b"Status", b"  "])
_BLOCKS = st.lists(_PARTS, max_size=24).map(b"".join)


@given(_BLOCKS)
@settings(max_examples=3000, deadline=None)
def test_same_dict_as_nats_py_on_arbitrary_blocks(raw: bytes) -> None:
    assert parse_header_lines(raw) == Client._parse_header_lines(raw)


@given(st.binary(max_size=200))
@settings(max_examples=2000, deadline=None)
def test_same_dict_as_nats_py_on_random_bytes(raw: bytes) -> None:
    assert parse_header_lines(raw) == Client._parse_header_lines(raw)


def test_a_direct_get_block_parses_alike() -> None:
    raw = (b"Nats-Msg-Id: 0193a1\r\nNats-Expected-Last-Subject-Sequence: 41\r\nNats-Stream: EV\r\n"
           b"Nats-Subject: aether.EV.e.acc\r\nNats-Sequence: 57\r\nNats-Time-Stamp: 2026-12-01T00:00:00Z\r\n"
           b"Nats-Num-Pending: 3\r\nNats-Last-Sequence: 0\r\n\r\n")
    assert parse_header_lines(raw) == Client._parse_header_lines(raw)
    assert parse_header_lines(raw)["Nats-Sequence"] == "57"


@pytest.mark.anyio
async def test_every_connection_with_an_inbox_uses_it_and_headers_arrive_intact() -> None:
    async with NatsServer() as server:
        nc = await nats.connect(server.url)
        try:
            Inbox.of(nc)
            assert nc._parse_header_lines is parse_header_lines
            sub = await nc.subscribe("h.test")
            await nc.publish("h.test", b"x", headers={"A": "1", "Nats-Msg-Id": "é-id", "B": " spaced "})
            msg = await sub.next_msg(timeout=5)
            assert msg.headers == {"A": "1", "Nats-Msg-Id": "é-id", "B": "spaced"}
        finally:
            await nc.close()
