"""The module's settings, read from the application's environment (then the process environment).

Every key may also be given for one application only, prefixed with its upper-cased name
(``BANKACCOUNTS_AETHER_ES_STREAM``), the way ``eventsourcing`` looks up its own settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from eventsourcing.utils import Environment, strtobool

from aether.connect import ENV_URL, ConnectOptions
from aether.errors import InvalidInputError
from aether.names import encode_token, validate_stream_base

__all__ = ["SUBJECT_ROOT", "Settings", "create_stream", "events_stream", "purpose_stream"]

SUBJECT_ROOT = "aether-es"
"""First token of every subject the module uses: ``aether-es.<stream>.e.<originator>`` for events,
``aether-es.<stream>.t.<application>`` for tracking records, ``aether-es.<stream>.n`` (core NATS,
not stored) for "new events" notifications."""

URL = ENV_URL
USER = "AETHER_NATS_USER"
PASSWORD = "AETHER_NATS_PASSWORD"
TOKEN = "AETHER_NATS_TOKEN"
CREDS = "AETHER_NATS_CREDS"
NKEY_SEED = "AETHER_NATS_NKEY_SEED"
TLS_CA = "AETHER_NATS_TLS_CA"
TLS_CERT = "AETHER_NATS_TLS_CERT"
TLS_KEY = "AETHER_NATS_TLS_KEY"
TLS_HOSTNAME = "AETHER_NATS_TLS_HOSTNAME"
CONNECT_TIMEOUT = "AETHER_NATS_CONNECT_TIMEOUT"
STREAM = "AETHER_ES_STREAM"
REPLICAS = "AETHER_ES_REPLICAS"
STORAGE = "AETHER_ES_STORAGE"
TIMEOUT = "AETHER_ES_TIMEOUT"
POLL_INTERVAL = "AETHER_ES_POLL_INTERVAL"
CREATE_TABLE = "CREATE_TABLE"


def _lookup(env: Environment, key: str) -> str | None:
    value = env.get(key)
    if value is None:
        value = os.environ.get(key)
    if value is not None:
        value = value.strip()
    return value or None


def _positive(env: Environment, key: str, default: float) -> float:
    text = _lookup(env, key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(f"{key} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise InvalidInputError(f"{key} must be > 0, got {text!r}")
    return value


def create_stream(env: Environment) -> bool:
    """``CREATE_TABLE`` (default true): create a missing stream, or require it to exist.

    Read when each recorder is made (the way ``eventsourcing``'s own modules read it).

    Raises:
        InvalidInputError: not a boolean.
    """
    text = _lookup(env, CREATE_TABLE) or "yes"
    try:
        return bool(strtobool(text))
    except ValueError:
        raise InvalidInputError(f"{CREATE_TABLE} must be a boolean (y/n, true/false), got {text!r}") from None


def events_stream(application_name: str) -> str:
    """The stream derived from an application name: ``es-<encoded name>`` (``es`` for no name).

    The encoding is :func:`aether.names.encode_token` (injective), so two names never share a stream.

    Raises:
        InvalidNameError: the derived name is longer than 64 characters (set ``AETHER_ES_STREAM``).
    """
    if not application_name:
        return "es"
    name = "es-" + encode_token(application_name)
    try:
        return validate_stream_base(name)
    except InvalidInputError as exc:
        raise type(exc)(f"the stream name derived from application name {application_name!r} is invalid ({exc}); "
                         f"choose one with {STREAM}") from None


def purpose_stream(stream: str, purpose: str) -> str:
    """The stream of an aggregate recorder for ``purpose`` (``"events"``: the application's own)."""
    return stream if purpose == "events" else f"{stream}__{encode_token(purpose)}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Everything the factory reads from the environment."""

    connect: ConnectOptions
    stream: str
    replicas: int
    storage: str
    timeout: float
    poll_interval: float

    @classmethod
    def from_env(cls, env: Environment) -> Settings:
        """Raises:
            InvalidInputError / InvalidNameError: a malformed setting.
        """
        connect = ConnectOptions(
            url=_lookup(env, URL), user=_lookup(env, USER), password=_lookup(env, PASSWORD),
            token=_lookup(env, TOKEN), creds=_lookup(env, CREDS), nkey_seed=_lookup(env, NKEY_SEED),
            tls_ca=_lookup(env, TLS_CA), tls_cert=_lookup(env, TLS_CERT), tls_key=_lookup(env, TLS_KEY),
            tls_hostname=_lookup(env, TLS_HOSTNAME), name=f"eventsourcing:{env.name}" if env.name else "eventsourcing",
            connect_timeout=_positive(env, CONNECT_TIMEOUT, 5.0),
        )
        explicit = _lookup(env, STREAM)
        stream = validate_stream_base(explicit) if explicit is not None else events_stream(env.name)
        replicas_text = _lookup(env, REPLICAS) or "1"
        try:
            replicas = int(replicas_text)
        except ValueError:
            raise InvalidInputError(f"{REPLICAS} must be an integer 1..5, got {replicas_text!r}") from None
        if not 1 <= replicas <= 5:
            raise InvalidInputError(f"{REPLICAS} must be an integer 1..5, got {replicas_text!r}")
        storage = (_lookup(env, STORAGE) or "file").lower()
        if storage not in ("file", "memory"):
            raise InvalidInputError(f"{STORAGE} must be 'file' or 'memory', got {storage!r}")
        create_stream(env)  # a malformed value fails now, not at the first recorder
        return cls(connect=connect, stream=stream, replicas=replicas, storage=storage,
                   timeout=_positive(env, TIMEOUT, 5.0), poll_interval=_positive(env, POLL_INTERVAL, 1.0))
