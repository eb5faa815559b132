"""Unit tests of the versioned wire encoding (no server)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aether.codec import (
    EVENT_FORMAT_V1,
    decode_event,
    decode_snapshot,
    encode_event,
    encode_snapshot,
)
from aether.errors import CorruptEventError, InvalidInputError
from aether.event import ActorSnapshot, Event

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=10,
)


@given(st.text(min_size=1), st.integers(1, 2**40), st.dictionaries(st.text(), json_values, max_size=5),
       st.dictionaries(st.text(), st.text(), max_size=3))
def test_round_trip(event_type: str, version: int, data: dict[str, object], metadata: dict[str, str]) -> None:
    event = Event(event_type, "actor", version, data, metadata)
    assert decode_event(encode_event(event)) == event


def test_format_header() -> None:
    assert encode_event(Event("E", "a", 1)).startswith(EVENT_FORMAT_V1)


@given(st.binary(max_size=200))
def test_decoder_only_raises_corrupt_event_error(payload: bytes) -> None:
    try:
        decode_event(payload, stream="S", sequence=7, actor_id="a")
    except CorruptEventError as exc:
        assert exc.sequence == 7 and exc.actor_id == "a" and exc.stream == "S"


@given(st.binary(max_size=200))
def test_decoder_with_valid_header_only_raises_corrupt_event_error(body: bytes) -> None:
    with contextlib.suppress(CorruptEventError):
        decode_event(EVENT_FORMAT_V1 + body)


@pytest.mark.parametrize("payload", [b"", b"hello", b"\xae\x02xx", b'{"event_type": "E"}', EVENT_FORMAT_V1 + b"\xc1"])
def test_garbage_names_location(payload: bytes) -> None:
    with pytest.raises(CorruptEventError, match="sequence 42") as info:
        decode_event(payload, stream="EV", sequence=42, actor_id="acc")
    assert "acc" in str(info.value)


def test_unencodable_data_is_input_error() -> None:
    with pytest.raises(InvalidInputError):
        encode_event(Event("E", "a", 1, {"x": object()}))


def test_snapshot_round_trip() -> None:
    snap = ActorSnapshot("a", 3, {"balance": 10})
    record = decode_snapshot(encode_snapshot(snap, 99))
    assert record.sequence == 99 and record.to_snapshot() == snap
    with pytest.raises(CorruptEventError):
        decode_snapshot(encode_event(Event("E", "a", 1)))
