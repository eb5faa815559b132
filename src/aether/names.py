"""Injective, wildcard-proof encoding of namespaces and actor ids into NATS names.

Rules (each violation raises :class:`~aether.errors.InvalidNameError` naming the rule):

* **Actor id**: any non-empty string of at most :data:`MAX_ACTOR_ID_LENGTH` characters that
  can be encoded as UTF-8. It becomes ONE subject token: the characters ``A-Z a-z 0-9 -``
  stay as they are, every other byte of its UTF-8 form becomes ``_XX`` (upper-case hex).
  ``a.b`` → ``a_2Eb``, ``a_b`` → ``a_5Fb``, ``*`` → ``_2A``, ``über`` → ``_C3_BCber``.
  The escape character ``_`` is itself escaped, so the encoding is injective and reversible,
  and no encoded id can contain ``.``, ``*``, ``>`` or whitespace.
* **Namespace**: one or more tokens separated by ``.``; each token is made of
  ``A-Z a-z 0-9 _ -``; at most :data:`MAX_NAMESPACE_LENGTH` characters in all.
* **Namespace pattern** (subscriptions): a namespace whose tokens may also be ``*`` (one
  token) or, as the last token, ``>`` (one or more tokens). A wildcard inside a token
  (``tenant*``) is rejected.
* **Stream base name**: ``A-Z a-z 0-9 _ -``, at most 64 characters, no ``__`` and not
  ending in ``_``. A namespaced stream is ``<base>__<encoded namespace>``; since the base
  never contains ``__`` the split is unambiguous, so two namespaces never share a stream.
* **Subjects**: ``<prefix>.<stream>.e.<encoded actor>`` for events and
  ``<prefix>.<stream>.s.<encoded actor>`` for snapshots. Stream names are unique, so two
  streams never share a subject.
"""

from __future__ import annotations

import re

from aether.errors import InvalidInputError, InvalidNameError, InvalidVersionError
from aether.event import Event

__all__ = [
    "MAX_ACTOR_ID_LENGTH",
    "MAX_NAMESPACE_LENGTH",
    "check_event",
    "decode_token",
    "encode_token",
    "event_subject",
    "snapshot_subject",
    "stream_name",
    "validate_actor_id",
    "validate_namespace",
    "validate_namespace_pattern",
    "validate_stream_base",
    "validate_subject_prefix",
]

MAX_ACTOR_ID_LENGTH = 256
MAX_NAMESPACE_LENGTH = 128
MAX_STREAM_BASE_LENGTH = 64

_SAFE_TOKEN = re.compile(r"[A-Za-z0-9-]+")
_NS_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_NAMESPACE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")  # a whole valid namespace (the fast check)
_STREAM_BASE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPED = re.compile(r"(?:_[0-9A-F]{2}|[A-Za-z0-9-])+")
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def encode_token(value: str) -> str:
    """Encode any string into one NATS subject token (injective; see the module docstring).

    Raises:
        InvalidNameError: ``value`` cannot be encoded as UTF-8 (lone surrogates).
    """
    if _SAFE_TOKEN.fullmatch(value):
        return value
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidNameError(f"name {value!r} is not valid Unicode text (cannot be UTF-8 encoded)") from exc
    return "".join(chr(b) if b in _SAFE_BYTES else f"_{b:02X}" for b in raw)


def decode_token(token: str) -> str:
    """Invert :func:`encode_token`.

    Raises:
        InvalidNameError: ``token`` is not the output of :func:`encode_token`.
    """
    if not token or not _ESCAPED.fullmatch(token):
        raise InvalidNameError(f"{token!r} is not an encoded Aether name")
    if "_" not in token:
        return token
    out = bytearray()
    i = 0
    while i < len(token):
        ch = token[i]
        if ch == "_":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(ch))
            i += 1
    try:
        decoded = out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidNameError(f"{token!r} does not decode to UTF-8 text") from exc
    if encode_token(decoded) != token:
        raise InvalidNameError(f"{token!r} is not in canonical encoded form")
    return decoded


def validate_actor_id(actor_id: object) -> str:
    """Check an actor id and return it.

    Raises:
        InvalidNameError: not a string, empty, longer than MAX_ACTOR_ID_LENGTH, or not UTF-8 encodable.
    """
    if not isinstance(actor_id, str):
        raise InvalidNameError(f"actor id must be a str, got {type(actor_id).__name__}")
    if not actor_id:
        raise InvalidNameError("actor id must not be empty")
    if len(actor_id) > MAX_ACTOR_ID_LENGTH:
        raise InvalidNameError(
            f"actor id is {len(actor_id)} characters long; the maximum is {MAX_ACTOR_ID_LENGTH}"
        )
    if not actor_id.isascii():
        try:
            actor_id.encode()
        except UnicodeEncodeError:
            raise InvalidNameError(f"actor id {actor_id!r} holds a lone surrogate (not UTF-8 encodable)") from None
    return actor_id


def check_event(event: object) -> None:
    """Check that ``event`` is an :class:`~aether.event.Event` with a usable address: its version
    and actor id (cheap: runs on every append and every bus publish; the stores and both buses
    share it — :mod:`aether.store._validation` re-exports it).

    Raises:
        InvalidInputError: not an :class:`~aether.event.Event`.
        InvalidVersionError: ``version`` is not an int >= 1.
        InvalidNameError: the actor id breaks the rules of :func:`validate_actor_id`.
    """
    if type(event) is not Event and not isinstance(event, Event):
        text = repr(event)
        raise InvalidInputError(f"expected an aether.Event, got {type(event).__name__} "
                                f"{text[:60]}{'…' if len(text) > 60 else ''}")
    version = event.version
    if type(version) is not int or version < 1:
        raise InvalidVersionError(f"version must be an int >= 1, got {version!r} (actor {event.actor_id!r})")
    actor_id = event.actor_id
    if type(actor_id) is not str or not actor_id or len(actor_id) > MAX_ACTOR_ID_LENGTH:
        validate_actor_id(actor_id)  # raises InvalidNameError naming the rule broken


def _check_length(kind: str, value: str) -> None:
    if not value:
        raise InvalidNameError(f"{kind} must not be empty")
    if len(value) > MAX_NAMESPACE_LENGTH:
        raise InvalidNameError(f"{kind} {value[:40]!r}… is longer than {MAX_NAMESPACE_LENGTH} characters")


def validate_namespace(namespace: object) -> str:
    """Check an exact namespace (``tenant-a``, ``acme.orders``) and return it.

    Raises:
        InvalidNameError: not a str, empty, too long, an empty token, or a token with a
            character outside ``A-Z a-z 0-9 _ -`` (wildcards included).
    """
    if type(namespace) is str and len(namespace) <= MAX_NAMESPACE_LENGTH and _NAMESPACE.fullmatch(namespace):
        return namespace
    return _check_namespace(namespace, "namespace", wildcards=False)  # raises, naming the rule broken


def validate_namespace_pattern(pattern: object) -> str:
    """Check a subscription pattern: a namespace whose tokens may be ``*`` or a final ``>``.

    Raises:
        InvalidNameError: as :func:`validate_namespace`, or a misplaced/partial wildcard.
    """
    return _check_namespace(pattern, "namespace pattern", wildcards=True)


def _check_namespace(value: object, kind: str, *, wildcards: bool) -> str:
    """Check a namespace (or a pattern: ``wildcards``) token by token, naming the first rule broken."""
    if not isinstance(value, str):
        raise InvalidNameError(f"{kind} must be a str, got {type(value).__name__}")
    _check_length(kind, value)
    tokens = value.split(".")
    for i, token in enumerate(tokens):
        if wildcards and token in ("*", ">"):
            if token == ">" and i != len(tokens) - 1:
                raise InvalidNameError(f"{kind} {value!r}: '>' is allowed only as the last token")
            continue
        if not token:
            raise InvalidNameError(f"{kind} {value!r} has an empty token (leading, trailing or '..')")
        if not _NS_TOKEN.fullmatch(token):
            allowed = ("A-Z a-z 0-9 _ -, or be exactly '*' or a final '>'" if wildcards else
                       "A-Z a-z 0-9 _ - (wildcards are allowed only in subscription patterns, as whole tokens)")
            raise InvalidNameError(f"{kind} {value!r}: token {token!r} may only contain {allowed}")
    return value


def validate_stream_base(name: object) -> str:
    """Check a stream base name and return it.

    Raises:
        InvalidNameError: not ``A-Z a-z 0-9 _ -``, empty, too long, contains ``__`` or ends in ``_``.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"stream name must be a str, got {type(name).__name__}")
    if not name or len(name) > MAX_STREAM_BASE_LENGTH:
        raise InvalidNameError(f"stream name must be 1..{MAX_STREAM_BASE_LENGTH} characters, got {name!r}")
    if not _STREAM_BASE.fullmatch(name):
        raise InvalidNameError(f"stream name {name!r} may only contain A-Z a-z 0-9 _ -")
    if "__" in name or name.endswith("_"):
        raise InvalidNameError(
            f"stream name {name!r} must not contain '__' or end in '_' (reserved for namespaces)"
        )
    return name


def validate_subject_prefix(prefix: object) -> str:
    """Check a subject prefix (dot-separated tokens of ``A-Z a-z 0-9 _ -``).

    Raises:
        InvalidNameError: on any other character, an empty token, or a wildcard.
    """
    try:
        return validate_namespace(prefix)
    except InvalidNameError as exc:
        raise InvalidNameError(f"invalid subject prefix: {exc}") from None


def stream_name(base: str, namespace: str | None = None) -> str:
    """The JetStream stream name for a base name and an optional namespace (injective).

    Raises:
        InvalidNameError: the base or the namespace breaks its rule.
    """
    validate_stream_base(base)
    if namespace is None:
        return base
    validate_namespace(namespace)
    return f"{base}__{encode_token(namespace)}"


def event_subject(prefix: str, stream: str, actor_id: str) -> str:
    """The subject holding ``actor_id``'s events in ``stream``."""
    return f"{prefix}.{stream}.e.{encode_token(validate_actor_id(actor_id))}"


def snapshot_subject(prefix: str, stream: str, actor_id: str) -> str:
    """The subject holding ``actor_id``'s snapshots in ``stream``."""
    return f"{prefix}.{stream}.s.{encode_token(validate_actor_id(actor_id))}"
