"""Unit tests of the name encoding (no server)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aether.errors import InvalidNameError
from aether.names import (
    MAX_ACTOR_ID_LENGTH,
    decode_token,
    encode_token,
    event_subject,
    stream_name,
    validate_actor_id,
    validate_namespace,
    validate_namespace_pattern,
    validate_stream_base,
)

_SUBJECT_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    ("name", "token"),
    [("acc-1", "acc-1"), ("a.b", "a_2Eb"), ("a_b", "a_5Fb"), ("*", "_2A"), (">", "_3E"), ("a b", "a_20b"),
     ("über", "_C3_BCber"), ("user@example.com", "user_40example_2Ecom")],
)
def test_encode_examples(name: str, token: str) -> None:
    assert encode_token(name) == token
    assert decode_token(token) == name


@given(st.text(min_size=1, max_size=80).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)))
def test_round_trip_and_safe_alphabet(name: str) -> None:
    token = encode_token(name)
    assert set(token) <= _SUBJECT_SAFE
    assert decode_token(token) == name


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_injective(a: str, b: str) -> None:
    try:
        ta, tb = encode_token(a), encode_token(b)
    except InvalidNameError:
        return
    assert (ta == tb) == (a == b)


@given(st.text(max_size=40))
def test_decode_never_raises_foreign_errors(token: str) -> None:
    with contextlib.suppress(InvalidNameError):
        decode_token(token)


def test_lone_surrogate_rejected() -> None:
    with pytest.raises(InvalidNameError, match="UTF-8"):
        encode_token("a\ud800")


@pytest.mark.parametrize("bad", ["", "x" * (MAX_ACTOR_ID_LENGTH + 1), 5, None])
def test_invalid_actor_ids(bad: object) -> None:
    with pytest.raises(InvalidNameError):
        validate_actor_id(bad)
    with pytest.raises(ValueError):
        validate_actor_id(bad)


@pytest.mark.parametrize("ns", ["tenant-a", "tenant_b", "acme.orders", "a.b.c", "A1"])
def test_valid_namespaces(ns: str) -> None:
    assert validate_namespace(ns) == ns


@pytest.mark.parametrize(
    ("ns", "rule"),
    [("", "empty"), ("a..b", "empty token"), (".a", "empty token"), ("a.", "empty token"),
     ("tenant*", "may only contain"), ("a.*", "may only contain"), (">", "may only contain"),
     ("a b", "may only contain"), ("ü", "may only contain"), ("x" * 200, "longer")],
)
def test_invalid_namespaces_name_the_rule(ns: str, rule: str) -> None:
    with pytest.raises(InvalidNameError, match=rule):
        validate_namespace(ns)


@pytest.mark.parametrize("pattern", ["tenant-a", "*", ">", "tenant-a.>", "*.orders", "a.*.c"])
def test_valid_patterns(pattern: str) -> None:
    assert validate_namespace_pattern(pattern) == pattern


@pytest.mark.parametrize("pattern", ["tenant*", "a.>.b", "a..b", "", "t>", "a.b*", "a b"])
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_namespace_pattern(pattern)


@pytest.mark.parametrize("base", ["EVENTS", "my_events", "ev-1"])
def test_stream_base_ok(base: str) -> None:
    assert validate_stream_base(base) == base


@pytest.mark.parametrize("base", ["", "a__b", "a_", "a.b", "a*", "a b", "x" * 65])
def test_stream_base_invalid(base: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_stream_base(base)


def test_stream_names_are_injective() -> None:
    pairs = [("EV", None), ("EV", "a"), ("EV", "a.b"), ("EV", "a_b"), ("EV", "a-b"), ("EV", "_x"),
             ("EV_a", None), ("EV-a", None), ("EV", "a_2Eb")]
    names = [stream_name(b, n) for b, n in pairs]
    assert len(set(names)) == len(names)
    assert stream_name("EV", "tenant-a") == "EV__tenant-a"


_bases = st.sampled_from(["EV", "E_V", "E-V"])
_namespaces = st.none() | st.from_regex(r"[A-Za-z0-9_-]{1,5}(\.[A-Za-z0-9_-]{1,5}){0,2}", fullmatch=True)


@given(_bases, _namespaces, _bases, _namespaces)
def test_stream_name_injective_property(b1: str, n1: str | None, b2: str, n2: str | None) -> None:
    assert (stream_name(b1, n1) == stream_name(b2, n2)) == ((b1, n1) == (b2, n2))


def test_subjects_differ_for_confusable_ids() -> None:
    assert event_subject("aether", "EV", "a.b") != event_subject("aether", "EV", "a_b")
    assert event_subject("aether", "EV", "a.b").count(".") == 3
