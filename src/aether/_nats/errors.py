"""The one table from nats-py exceptions and JetStream error codes to the Aether error tree.

Every component translates NATS failures here, so the same failure reads the same everywhere.
What differs per component is only the class a caller sees for "NATS cannot be reached" and
for "the operation failed otherwise": the store reports :class:`StoreUnavailableError` /
:class:`StoreError` (its documented errors), the bus :class:`NatsConnectionError` for both (it has
no error of its own), see :data:`STORE_ERRORS` and :data:`BUS_ERRORS`.

Permission refusals reach a client as text only (``-ERR 'Permissions Violation for …'`` through
the error callback, or a JetStream error description): :func:`is_permission_denial` and
:func:`parse_permission_denial` are the only places that read that text.

With :func:`check_client` (the InvalidInputError for an argument that is no nats-py client), this
is the adapter's only module besides :mod:`aether.connect` that imports nats-py at run time.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from aether.errors import (
    AetherError,
    AetherTimeoutError,
    InvalidInputError,
    JetStreamApiError,
    NatsConnectionError,
    PermissionDeniedError,
    StoreError,
    StoreUnavailableError,
)

__all__ = [
    "BUS_ERRORS",
    "ERR_BATCH_DUPLICATE_MSG_ID",
    "ERR_MESSAGE_TOO_LARGE",
    "ERR_NO_MESSAGE_FOUND",
    "ERR_STREAM_NAME_IN_USE",
    "ERR_STREAM_NOT_FOUND",
    "ERR_WRONG_LAST_SEQUENCE",
    "ERR_WRONG_LAST_SEQUENCE_CLUSTERED",
    "NOT_SENT_ERRORS",
    "STORE_ERRORS",
    "WRONG_LAST_SEQUENCE_CODES",
    "ApiError",
    "ErrorClasses",
    "api_error",
    "check_client",
    "is_payload_too_large",
    "is_permission_denial",
    "parse_permission_denial",
    "translate_nats_error",
]

# ---- JetStream error codes (``err_code`` of an API error or a publish ack) ----------------------
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_WRONG_LAST_SEQUENCE_CLUSTERED = 10164  # the same check, as reported by a clustered stream
WRONG_LAST_SEQUENCE_CODES = frozenset({ERR_WRONG_LAST_SEQUENCE, ERR_WRONG_LAST_SEQUENCE_CLUSTERED})
"""Every code a lost compare-and-set (expected last sequence) comes back with."""
ERR_STREAM_NOT_FOUND = 10059
ERR_STREAM_NAME_IN_USE = 10058
ERR_MESSAGE_TOO_LARGE = 10054
ERR_NO_MESSAGE_FOUND = 10037
ERR_BATCH_DUPLICATE_MSG_ID = 10201


def check_client(nc: object, who: str) -> None:
    """Raise InvalidInputError unless ``nc`` is a nats-py client (checked before any I/O)."""
    if not isinstance(nc, Client):
        raise InvalidInputError(f"{who} needs a connected nats-py client (nats.aio.client.Client), got "
                                f"{type(nc).__name__}")


class ErrorClasses(NamedTuple):
    """What a component raises for NATS trouble: ``unavailable`` when the connection is down
    (closed, draining, reconnecting, no server), ``failed`` for any other failure."""

    unavailable: type[AetherError]
    failed: type[AetherError]


STORE_ERRORS = ErrorClasses(StoreUnavailableError, StoreError)
"""The stores, the cluster, projections (their documented errors: StoreUnavailableError / StoreError)."""
BUS_ERRORS = ErrorClasses(NatsConnectionError, NatsConnectionError)
"""The NATS bus (documented in docs/bus.md: NatsConnectionError)."""

# ---- the table: nats-py (and asyncio) exception classes -> what happened; first match wins -------
_TIMEOUT = "timeout"
_NO_RESPONDERS = "no responders"
_UNAVAILABLE = "unavailable"
_TOO_LARGE = "too large"
_API = "api"
_TABLE: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    # before OSError: nats-py's TimeoutError is a builtin TimeoutError, an OSError
    ((nats.errors.TimeoutError, asyncio.TimeoutError, TimeoutError), _TIMEOUT),
    ((nats.errors.NoRespondersError,), _NO_RESPONDERS),
    ((nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError, nats.errors.StaleConnectionError,
      nats.errors.OutboundBufferLimitError, nats.errors.NoServersError, ConnectionError, OSError), _UNAVAILABLE),
    ((nats.errors.MaxPayloadError,), _TOO_LARGE),
    ((nats.js.errors.APIError,), _API),
)

NOT_SENT_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError, nats.errors.OutboundBufferLimitError,
    nats.errors.MaxPayloadError, nats.errors.BadSubjectError)
"""nats-py errors of ``publish`` raised before the message was queued (it never left the client)."""


def _kind(exc: BaseException) -> str | None:
    for classes, kind in _TABLE:
        if isinstance(exc, classes):
            return kind
    return None


def translate_nats_error(exc: BaseException, what: str, classes: ErrorClasses = STORE_ERRORS) -> AetherError:
    """The AetherError for a nats-py (or asyncio / OS) exception raised while doing ``what``.

    An AetherError is returned as is. Otherwise: a timeout -> :class:`AetherTimeoutError`; the
    connection down -> ``classes.unavailable``; a permission refusal -> :class:`PermissionDeniedError`;
    a JetStream API error -> :class:`JetStreamApiError` (``err_code`` kept); anything else ->
    ``classes.failed``. The caller raises it ``from exc``.
    """
    if isinstance(exc, AetherError):
        return exc
    kind = _kind(exc)
    if kind == _TIMEOUT:
        return AetherTimeoutError(f"{what}: no reply from NATS in time")
    if kind == _UNAVAILABLE:
        return classes.unavailable(f"{what}: NATS connection unavailable ({type(exc).__name__})")
    text = str(exc)
    if is_permission_denial(text):
        return PermissionDeniedError(f"{what}: {text}")
    if kind == _NO_RESPONDERS:
        return classes.failed(f"{what}: no responder (is JetStream enabled, does the stream exist?)")
    if kind == _TOO_LARGE:
        return classes.failed(f"{what}: message exceeds the server's max payload")
    if kind == _API and isinstance(exc, nats.js.errors.APIError):
        return JetStreamApiError(what, int(exc.code or 0), int(exc.err_code or 0), str(exc.description or ""))
    return classes.failed(f"{what}: {type(exc).__name__}: {text}")


def is_payload_too_large(exc: BaseException) -> bool:
    """Whether nats-py refused a publish for exceeding the server's max payload."""
    return _kind(exc) == _TOO_LARGE


class ApiError(msgspec.Struct):
    """The ``error`` object of a JetStream API reply or publish ack."""

    code: int = 0
    err_code: int = 0
    description: str = ""


def api_error(err: ApiError, what: str) -> AetherError:
    """The AetherError for an error in a publish ack: :class:`PermissionDeniedError` for a refusal,
    else :class:`JetStreamApiError` (callers handle the codes they expect, e.g.
    :data:`WRONG_LAST_SEQUENCE_CODES`, before)."""
    text = err.description
    if is_permission_denial(text):
        return PermissionDeniedError(f"{what}: {text}")
    return JetStreamApiError(what, err.code, err.err_code, text)


# ---- permission refusals: the only place their text is read --------------------------------------
_PERMISSION_WORD = "permission"
_VIOLATION_PREFIX = "permissions violation for "


def is_permission_denial(text: str) -> bool:
    """Whether an error text (a nats-py exception, a JetStream error description) is a refusal
    for lack of permission."""
    return _PERMISSION_WORD in text.lower()


def parse_permission_denial(text: str) -> tuple[str, str] | None:
    """``(kind, subject)`` of a server's ``Permissions Violation for <kind> to "<subject>"`` error
    (kind lower-cased: ``publish`` / ``subscription``), or None for any other error."""
    at = text.lower().find(_VIOLATION_PREFIX)
    if at < 0:
        return None
    kind, _, subject = text[at + len(_VIOLATION_PREFIX):].partition(" to ")
    return kind.strip().lower(), subject.strip().strip('"')
