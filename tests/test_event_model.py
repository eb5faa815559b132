"""The value model (DESIGN.md section 5): Event and ActorSnapshot check their fields when built."""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from aether import ActorSnapshot, Event
from aether.codec import decode_event, encode_event
from aether.errors import InvalidInputError, InvalidNameError, InvalidVersionError
from aether.event import MAX_DEPTH, decode_trusted
from aether.testing.conformance import BAD_VALUES


class Kind(enum.StrEnum):
    DEPOSITED = "Deposited"


class Level(enum.IntEnum):
    HIGH = 3


def nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {}
    cursor = data
    for _ in range(depth - 1):
        cursor["n"] = {}
        cursor = cursor["n"]
    return data


@pytest.mark.parametrize(("fields", "error", "needle"), [
    ({"event_type": 123}, InvalidInputError, "Event.event_type must be a str"),
    ({"event_type": ""}, InvalidNameError, "Event.event_type must not be empty"),
    ({"event_type": None}, InvalidInputError, "Event.event_type"),
    ({"actor_id": 7}, InvalidInputError, "Event.actor_id must be a str"),
    ({"actor_id": ""}, InvalidNameError, "Event.actor_id must not be empty"),
    ({"actor_id": "a\ud800"}, InvalidInputError, "Event.actor_id: a str with a lone surrogate"),
    ({"version": "2"}, InvalidVersionError, "Event.version must be an int >= 1, got str '2'"),
    ({"version": 2.0}, InvalidVersionError, "got float 2.0"),
    ({"version": True}, InvalidVersionError, "got bool True"),
    ({"version": 0}, InvalidVersionError, "got 0"),
    ({"version": -3}, InvalidVersionError, "got -3"),
    ({"version": None}, InvalidVersionError, "Event.version"),
    ({"data": [1, 2]}, InvalidInputError, "Event.data must be a dict with str keys, got list"),
    ({"data": None}, InvalidInputError, "Event.data must be a dict"),
    ({"data": "text"}, InvalidInputError, "Event.data must be a dict"),
    ({"data": {1: "a"}}, InvalidInputError, "Event.data[1]: key 1 is of type int"),
    ({"data": {"a": {"b": [1, {2: 3}]}}}, InvalidInputError, "Event.data['a']['b'][1][2]: key 2"),
    ({"data": {"x": object()}}, InvalidInputError, "Event.data['x']: object is not a JSON value"),
    ({"data": {"x": {1, 2}}}, InvalidInputError, "Event.data['x']: set is not a JSON value"),
    ({"data": {"x": (1, 2)}}, InvalidInputError, "Event.data['x']: tuple is not a JSON value"),
    ({"data": {"x": b"raw"}}, InvalidInputError, "Event.data['x']: bytes is not a JSON value"),
    ({"data": {"x": datetime.now(UTC)}}, InvalidInputError, "datetime is not a JSON value"),
    ({"data": {"x": [0.5, float("nan")]}}, InvalidInputError, "Event.data['x'][1]: nan is not a JSON number"),
    ({"data": {"x": float("-inf")}}, InvalidInputError, "-inf is not a JSON number"),
    ({"data": {"x": 2**64}}, InvalidInputError, "out of range"),
    ({"data": {"x": "\udfff"}}, InvalidInputError, "lone surrogate"),
    ({"data": nested(MAX_DEPTH + 1)}, InvalidInputError, f"nested deeper than {MAX_DEPTH} levels"),
    ({"metadata": {"a": 1}}, InvalidInputError, "Event.metadata['a'] must be a str, got int 1"),
    ({"metadata": {1: "a"}}, InvalidInputError, "Event.metadata key 1 is of type int"),
    ({"metadata": None}, InvalidInputError, "Event.metadata must be a dict[str, str]"),
    ({"metadata": [("a", "b")]}, InvalidInputError, "Event.metadata must be a dict[str, str]"),
    ({"id": ""}, InvalidNameError, "Event.id must not be empty"),
    ({"id": 5}, InvalidInputError, "Event.id must be a str"),
    ({"id": "a\r\nNats-Expected-Last-Subject-Sequence: 0"}, InvalidInputError, "Event.id must not hold line breaks"),
    ({"timestamp": "yesterday"}, InvalidInputError, "Event.timestamp must be a timezone-aware datetime, got str"),
    ({"timestamp": datetime(2024, 1, 1)}, InvalidInputError, "Event.timestamp must be timezone-aware"),
    ({"timestamp": 1700000000}, InvalidInputError, "Event.timestamp"),
])
def test_event_refuses_bad_fields_naming_them(fields: dict[str, Any], error: type[Exception], needle: str) -> None:
    args: dict[str, Any] = {"event_type": "E", "actor_id": "a", "version": 1, **fields}
    with pytest.raises(error) as info:
        Event(**args)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)  # every input error is also a ValueError


@pytest.mark.parametrize("value", BAD_VALUES, ids=lambda v: type(v).__name__)
def test_every_bad_value_is_refused_in_data_metadata_and_state(value: Any) -> None:
    with pytest.raises(InvalidInputError):
        Event("E", "a", 1, {"v": value})
    with pytest.raises(InvalidInputError):
        Event("E", "a", 1, {"list": [1, {"deep": value}]})
    with pytest.raises(InvalidInputError):
        Event("E", "a", 1, metadata={"m": value})
    with pytest.raises(InvalidInputError):
        ActorSnapshot("a", 1, {"v": value})


def test_json_values_are_accepted_and_read_back_equal() -> None:
    data = {"none": None, "t": True, "f": False, "int": -(2**63), "big": 2**64 - 1, "float": -0.5, "str": "über ✓",
            "list": [1, "a", None, [2.5, {"k": []}]], "dict": {"": {}, "x": {"y": [True]}},
            "deep": nested(MAX_DEPTH - 1)}
    event = Event("E", "a", 1, data, {"trace": "ünïcode"})
    assert decode_event(encode_event(event)) == event
    deepest = Event("E", "a", 1, nested(MAX_DEPTH))  # data itself is the first level
    assert decode_event(encode_event(deepest)) == deepest


def test_subclasses_that_read_back_equal_are_accepted() -> None:
    event = Event(Kind.DEPOSITED, "a", 1, OrderedDict(kind=Kind.DEPOSITED, level=Level.HIGH, items=[Level.HIGH]))
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert decoded.data == {"kind": "Deposited", "level": 3, "items": [3]}


def test_timestamps_in_any_zone_read_back_as_the_same_instant() -> None:
    ts = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    decoded = decode_event(encode_event(Event("E", "a", 1, timestamp=ts)))
    assert decoded.timestamp == ts


def test_snapshot_refuses_bad_fields() -> None:
    with pytest.raises(InvalidNameError, match=r"ActorSnapshot\.actor_id"):
        ActorSnapshot("", 1, {})
    with pytest.raises(InvalidVersionError, match=r"ActorSnapshot\.version"):
        ActorSnapshot("a", True, {})
    with pytest.raises(InvalidInputError, match=r"ActorSnapshot.state\['s'\]: set"):
        ActorSnapshot("a", 1, {"s": {1}})
    with pytest.raises(InvalidInputError, match=r"ActorSnapshot\.timestamp"):
        ActorSnapshot("a", 1, {}, datetime(2024, 1, 1))
    for state in (None, 1, "s", [1, 2], {"a": [None]}):
        assert ActorSnapshot("a", 1, state).state == state


def test_trusted_decoding_is_per_thread_and_ends_with_the_call() -> None:
    """Checks are skipped only inside decode_trusted, and only on its own thread."""
    inside: list[BaseException | None] = []
    other: list[BaseException | None] = []
    started, release = threading.Event(), threading.Event()

    def build_bad() -> BaseException | None:
        try:
            Event("E", "a", 0)
        except InvalidInputError as exc:
            return exc
        return None

    def decoding(_: None) -> None:
        inside.append(build_bad())
        started.set()
        release.wait(10)

    def elsewhere() -> None:
        started.wait(10)
        other.append(build_bad())
        release.set()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    decode_trusted(decoding, None)
    thread.join()
    assert inside == [None]  # skipped inside
    assert isinstance(other[0], InvalidVersionError)  # checked on the other thread meanwhile
    assert isinstance(build_bad(), InvalidVersionError)  # and checked again after the call
