"""Unit tests of the versioned wire encoding (no server)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
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
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=10,
)

# anything at all: JSON values and what is not one (tuples, sets, bytes, NaN, huge ints, datetimes,
# non-str keys, lone surrogates, objects), nested
_anything_leaf = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(codec=None))
    | st.binary(max_size=4) | st.datetimes() | st.just(object()) | st.decimals(allow_nan=False, places=2)
    | st.sampled_from([b"", (), frozenset(), float("nan"), float("inf"), 2**64, -(2**63) - 1, "\ud800"])
)
anything = st.recursive(
    _anything_leaf,
    lambda children: (st.lists(children, max_size=3) | st.tuples(children, children)
                      | st.sets(st.integers() | st.text(), max_size=3)
                      | st.dictionaries(st.text() | st.integers() | st.booleans() | st.none(), children, max_size=3)),
    max_leaves=8,
)


@given(st.text(min_size=1), st.integers(1, 2**40), st.dictionaries(st.text(), json_values, max_size=5),
       st.dictionaries(st.text(), st.text(), max_size=3))
def test_round_trip(event_type: str, version: int, data: dict[str, object], metadata: dict[str, str]) -> None:
    event = Event(event_type, "actor", version, data, metadata)
    assert decode_event(encode_event(event)) == event


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(anything, st.dictionaries(st.text() | st.integers(), st.text() | st.integers() | st.none(), max_size=2))
def test_any_event_that_builds_encodes_and_reads_back_equal(data: Any, metadata: Any) -> None:
    """Encoder fuzzing: whatever data/metadata, either Event(...) refuses it with InvalidInputError,
    or the event encodes and decodes back equal (field by field: nothing converted, nothing lost)."""
    try:
        event = Event("E", "actor", 1, {"v": data}, metadata)
    except InvalidInputError:
        return
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert decoded.data == event.data and decoded.metadata == event.metadata
    assert _types(decoded.data) == _types(event.data)


def _types(value: Any) -> Any:
    """The value's shape with its plain types (a tuple would read back as a list: refused)."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    for plain in (bool, int, float, str):
        if isinstance(value, plain):
            return plain
    return type(value)


@given(anything)
def test_snapshot_state_that_builds_reads_back_equal(state: Any) -> None:
    try:
        snapshot = ActorSnapshot("actor", 1, state)
    except InvalidInputError:
        return
    assert decode_snapshot(encode_snapshot(snapshot)).to_snapshot() == snapshot


def test_decoding_does_not_check_again_so_old_events_stay_readable() -> None:
    """An event stored before the value model was enforced (bytes in data) still decodes."""

    class OldEvent(msgspec.Struct, frozen=True):
        event_type: str
        actor_id: str
        version: int
        data: dict[str, Any]
        metadata: dict[str, str]
        id: str
        timestamp: datetime

    old = OldEvent("E", "a", 1, {"blob": b"\x00\x01"}, {}, "id-1", datetime.now(UTC))
    event = decode_event(EVENT_FORMAT_V1 + msgspec.msgpack.encode(old))
    assert event.data == {"blob": b"\x00\x01"}
    with pytest.raises(InvalidInputError, match=r"Event.data\['blob'\]: bytes is not a JSON value"):
        Event("E", "a", 1, {"blob": b"\x00\x01"})  # new events are still checked after a decode


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


def test_unencodable_data_is_refused_when_the_event_is_built() -> None:
    with pytest.raises(InvalidInputError, match=r"Event.data\['x'\]: object is not a JSON value"):
        Event("E", "a", 1, {"x": object()})


def test_snapshot_round_trip() -> None:
    snap = ActorSnapshot("a", 3, {"balance": 10})
    record = decode_snapshot(encode_snapshot(snap, 99))
    assert record.sequence == 99 and record.to_snapshot() == snap
    with pytest.raises(CorruptEventError):
        decode_snapshot(encode_event(Event("E", "a", 1)))
