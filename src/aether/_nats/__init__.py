"""The adapter: the one place where Aether speaks nats-py (see docs/architecture.md).

* :mod:`.errors` — the one table from nats-py exceptions and JetStream error codes to the
  Aether error tree (:func:`translate_nats_error`, :func:`api_error`), and the only reading of
  permission-refusal text;
* :mod:`.inbox` — one multiplexed request/reply inbox per connection (single and multi-message
  replies, pipelined bursts, deadlines, probes);
* :mod:`.jsapi` — JetStream API calls over that inbox (:class:`JsApi`);
* :mod:`.denials` — the error-callback chain composed at connect time and the permission watch
  that turns the server's refusals into immediate :class:`~aether.errors.PermissionDeniedError`.

Components import these names from ``aether._nats``; none of them imports nats-py at run time.
"""

from __future__ import annotations

from aether.errors import JetStreamApiError

from .denials import DenialListener, ErrorCallback, compose_error_callback, refused_or, watch_permission_denials
from .errors import (
    BUS_ERRORS,
    ERR_BATCH_DUPLICATE_MSG_ID,
    ERR_MESSAGE_TOO_LARGE,
    ERR_NO_MESSAGE_FOUND,
    ERR_STREAM_NAME_IN_USE,
    ERR_STREAM_NOT_FOUND,
    ERR_WRONG_LAST_SEQUENCE,
    ERR_WRONG_LAST_SEQUENCE_CLUSTERED,
    NOT_SENT_ERRORS,
    STORE_ERRORS,
    WRONG_LAST_SEQUENCE_CODES,
    ApiError,
    ErrorClasses,
    api_error,
    check_client,
    is_payload_too_large,
    translate_nats_error,
)
from .inbox import Inbox, inbox_root
from .jsapi import JsApi, PubAck

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
    "DenialListener",
    "ErrorCallback",
    "ErrorClasses",
    "Inbox",
    "JetStreamApiError",
    "JsApi",
    "PubAck",
    "api_error",
    "check_client",
    "compose_error_callback",
    "inbox_root",
    "is_payload_too_large",
    "refused_or",
    "translate_nats_error",
    "watch_permission_denials",
]
