"""Aether's one JetStream KV client, spoken over the public JetStream API (no nats-py ``KeyValue``).

A bucket ``<name>`` is the stream ``KV_<name>`` holding subjects ``$KV.<name>.<key>``, as the
KV conventions say (``nats kv`` can read it). Used by the cluster (its bucket holds the leader
lease, the shard map and heartbeats) and by projections (checkpoints, leases).

Going below nats-py's KV API gives what it lacks or gets wrong: TTLs on updates (nats-py
truncates fractional ones), compare-and-set on a *different* key
(``Nats-Expected-Last-Subject-Sequence-Subject``, used to fence a leader's writes with its
lease), one-request reads of many keys (batch direct get ``multi_last``), every lost
compare-and-set reported the same way (:class:`KvConflict`: 10071, and 10164 which a replicated
stream answers while writes of the subject race), and no dependence on limit markers (which
nats-py's ``get``/``create`` mishandle; Aether's buckets configure none).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from aether._nats import (
    ERR_NO_MESSAGE_FOUND,
    WRONG_LAST_SEQUENCE_CODES,
    JetStreamApiError,
    JsApi,
    api_error,
    translate_nats_error,
)
from aether._nats.streams import create_or_adopt, delete_stream
from aether.errors import AetherError, StoreError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["KvBucket", "KvConflict", "KvEntry", "KvWatch", "Op"]

_NS = 1_000_000_000
_encode_json = msgspec.json.encode

Op = Literal["PUT", "DEL", "PURGE"]


class KvConflict(JetStreamApiError):
    """A compare-and-set write found another revision (``err_code`` 10071, or 10164 on a
    replicated stream). Internal: callers turn it into a decision (lost race, lease lost)."""


class KvEntry(msgspec.Struct, frozen=True):
    """The last message of one key: value, revision (stream sequence), operation and headers."""

    key: str
    value: bytes
    revision: int
    op: Op
    headers: dict[str, str]

    @property
    def deleted(self) -> bool:
        """Whether the key's last message is a tombstone (``DEL`` or ``PURGE``)."""
        return self.op != "PUT"


def _op_of(headers: dict[str, str] | None) -> Op:
    op = (headers or {}).get("KV-Operation", "PUT")
    return "DEL" if op == "DEL" else "PURGE" if op == "PURGE" else "PUT"


def _parse_raw_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.decode(errors="replace").split("\r\n")[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
    return headers


class KvBucket:
    """Reads, compare-and-set writes and watches on one KV bucket.

    Args:
        nc: a connected nats-py client (never closed here).
        name: the bucket name (stream ``KV_<name>``).
        replicas / storage: of the stream when :meth:`ensure` creates it.
        max_age: seconds a value lives in the bucket (``None``: forever). An existing bucket
            must have the same max age (:meth:`ensure` checks it).
        msg_ttl: create the bucket with per-message TTLs (``ttl=`` of :meth:`write`).
        keyed_reads: read a key with the direct get that names it in the API subject
            (``$JS.API.DIRECT.GET.KV_<name>.$KV.<name>.<key>``), so that NATS permissions can
            confine a user to its own keys; otherwise the request body names it.
        description: of the stream when created.
        timeout: default seconds to wait for a server reply.
        api: a request helper to share (not closed by :meth:`aclose`); one is made otherwise.
    """

    def __init__(self, nc: Client, name: str, *, replicas: int = 1, storage: str = "file",
                 max_age: float | None = None, msg_ttl: bool = True, keyed_reads: bool = False,
                 description: str = "", timeout: float = 5.0, api: JsApi | None = None) -> None:
        self.nc = nc
        self.name = name
        self.stream = f"KV_{name}"
        self.prefix = f"$KV.{name}."
        self.replicas = replicas
        self.storage = storage
        self.max_age = max_age
        self.msg_ttl = msg_ttl
        self.keyed_reads = keyed_reads
        self.description = description
        self._own_api = api is None
        self.api = api if api is not None else JsApi(nc, timeout=timeout)
        self._direct = f"$JS.API.DIRECT.GET.{self.stream}"

    def subject(self, key: str) -> str:
        """The subject of ``key``."""
        return self.prefix + key

    # ---- bucket ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The stream configuration :meth:`ensure` creates the bucket with."""
        max_age = int((self.max_age or 0) * _NS)
        config: dict[str, Any] = {
            "name": self.stream,
            "subjects": [f"{self.prefix}>"],
            "retention": "limits",
            "max_msgs_per_subject": 1,
            "max_msgs": -1,
            "max_bytes": -1,
            "max_msg_size": -1,
            "discard": "new",
            "allow_rollup_hdrs": True,
            "deny_delete": True,
            "allow_direct": True,
            "num_replicas": self.replicas,
            "storage": self.storage,
            "max_age": max_age,
            # the duplicate window may not exceed the max age
            "duplicate_window": min(2 * 60 * _NS, max_age) if max_age else 2 * 60 * _NS,
        }
        if self.msg_ttl:
            config["allow_msg_ttl"] = True
        if self.description:
            config["description"] = self.description
        return config

    async def ensure(self, *, create: bool = True) -> None:
        """Create the bucket when missing, else adopt it (no limit markers either way).

        An adopted bucket without direct gets (or, with ``msg_ttl``, without per-message TTLs)
        is upgraded when this client may update the stream; a bucket this client may not upgrade
        is used without per-message TTLs (its max age then expires values).

        Raises:
            StoreError: the bucket exists with another max age, or is missing and ``create`` is false.
            PermissionDeniedError: the NATS user may not use the bucket.
            StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        info = await create_or_adopt(self.api, self.config(), create=create)
        if info is None:
            return
        config = info["config"]
        if self.max_age is not None:
            max_age = int(config.get("max_age", 0)) / _NS
            if abs(max_age - self.max_age) > 1e-3:
                raise StoreError(f"KV bucket {self.name!r} exists with max age {max_age:g}s, expected "
                                 f"{self.max_age:g}s")
        want_ttl = self.msg_ttl and not config.get("allow_msg_ttl")
        want_direct = not config.get("allow_direct")
        if want_ttl or want_direct:
            config.update(allow_direct=True, **({"allow_msg_ttl": True} if self.msg_ttl else {}))
            try:
                await self.api.api(f"STREAM.UPDATE.{self.stream}", config)
            except AetherError:
                if want_direct:  # reads need direct gets
                    raise
                self.msg_ttl = False  # the max age (if any) expires values instead

    async def destroy(self) -> None:
        """Delete the bucket and everything in it (tests and tooling).

        Raises:
            StoreError / PermissionDeniedError / StoreUnavailableError / AetherTimeoutError.
        """
        await delete_stream(self.api, self.stream)

    # ---- reads ------------------------------------------------------------------------------
    def _entry_from_direct(self, msg: Msg) -> KvEntry | None:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "404":
            return None
        if status is not None:
            raise StoreError(f"reading KV bucket {self.name!r}: {status} {headers.get('Description', '')}")
        subject = headers.get("Nats-Subject", "")
        return KvEntry(subject[len(self.prefix):], msg.data, int(headers["Nats-Sequence"]), _op_of(headers),
                       dict(headers))

    async def get(self, key: str, *, linearizable: bool = False, timeout: float | None = None) -> KvEntry | None:
        """The last message of ``key`` (a tombstone included: see :attr:`KvEntry.deleted`);
        ``None`` when it has none (never written, or expired).

        With ``linearizable`` the stream leader answers (no stale replica read).

        Raises:
            PermissionDeniedError: the NATS user may not read the key.
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        subject = self.prefix + key
        what = f"reading {key!r} of KV bucket {self.name!r}"
        if not linearizable:
            if self.keyed_reads:
                msg = await self.api.request(f"{self._direct}.{subject}", b"", timeout=timeout, what=what)
            else:
                msg = await self.api.request(self._direct, _encode_json({"last_by_subj": subject}), timeout=timeout,
                                             what=what)
            return self._entry_from_direct(msg)
        try:
            reply = await self.api.api(f"STREAM.MSG.GET.{self.stream}", {"last_by_subj": subject}, timeout=timeout)
        except JetStreamApiError as exc:
            if exc.err_code == ERR_NO_MESSAGE_FOUND:
                return None
            raise
        raw = reply["message"]
        headers = _parse_raw_headers(base64.b64decode(raw["hdrs"])) if raw.get("hdrs") else {}
        data = base64.b64decode(raw["data"]) if raw.get("data") else b""
        return KvEntry(key, data, int(raw["seq"]), _op_of(headers), headers)

    async def get_prefix(self, prefix: str, *, timeout: float | None = None) -> list[KvEntry]:
        """The last message of every key under ``prefix`` (e.g. ``"node."``), in one batch read.

        Raises:
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        body = _encode_json({"multi_last": [f"{self.prefix}{prefix}>"], "batch": 1000})
        msgs = await self.api.request_many(self._direct, body, timeout=timeout,
                                           what=f"listing {prefix!r} of KV bucket {self.name!r}")
        entries: list[KvEntry] = []
        for msg in msgs:
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is None:
                entry = self._entry_from_direct(msg)
                if entry is not None:
                    entries.append(entry)
            elif status not in ("204", "404"):
                raise StoreError(f"listing KV bucket {self.name!r}: {status} {headers.get('Description', '')}")
        return entries

    # ---- writes -----------------------------------------------------------------------------
    async def write(self, key: str, value: bytes, *, last: int | None = None, ttl: float | None = None,
                    op: Op = "PUT", headers: dict[str, str] | None = None, timeout: float | None = None) -> int:
        """Write ``key`` and return the new revision.

        Args:
            last: compare-and-set: the revision the key must have now (0: no message at all).
            ttl: seconds the message lives (rounded UP to whole seconds, the server's unit);
                ignored on a bucket without per-message TTLs (:attr:`msg_ttl`), whose max age applies.
            op: ``"DEL"`` / ``"PURGE"`` writes a tombstone.
            headers: extra headers (e.g. a fence on another key, :meth:`fence_headers`).

        Raises:
            KvConflict: the compare-and-set (or a fence in ``headers``) failed, whatever code the
                server used for it (10071; 10164 on a replicated stream).
            PermissionDeniedError: the NATS user may not write the key.
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        hdrs: dict[str, str] = {}
        if last is not None:
            hdrs["Nats-Expected-Last-Subject-Sequence"] = str(last)
        if ttl is not None and self.msg_ttl:
            hdrs["Nats-TTL"] = f"{max(1, math.ceil(ttl))}s"
        if op != "PUT":
            hdrs["KV-Operation"] = op
            if op == "PURGE":
                hdrs["Nats-Rollup"] = "sub"
        if headers:
            hdrs.update(headers)
        what = f"writing {key!r} of KV bucket {self.name!r}"
        ack = await self.api.publish_acked(self.prefix + key, value, hdrs, timeout=timeout, what=what)
        if ack.error is not None:
            err = ack.error
            if err.err_code in WRONG_LAST_SEQUENCE_CODES:
                raise KvConflict(what, err.code, err.err_code, err.description)
            raise api_error(err, what)
        return ack.seq

    async def put(self, key: str, value: bytes, *, ttl: float | None = None, timeout: float | None = None) -> int:
        """Write ``key`` unconditionally; returns the new revision. Raises as :meth:`write`."""
        return await self.write(key, value, ttl=ttl, timeout=timeout)

    async def create(self, key: str, value: bytes, *, ttl: float | None = None, headers: dict[str, str] | None = None,
                     timeout: float | None = None) -> int:
        """Write ``key`` only if it has no live value (never written, expired, or a tombstone).

        Raises:
            KvConflict: the key has a live value (or a racing writer won).
            PermissionDeniedError / StoreError / StoreUnavailableError / AetherTimeoutError: as :meth:`write`.
        """
        try:
            return await self.write(key, value, last=0, ttl=ttl, headers=headers, timeout=timeout)
        except KvConflict:
            entry = await self.get(key, timeout=timeout)
            if entry is None or not entry.deleted:
                raise
        return await self.write(key, value, last=entry.revision, ttl=ttl, headers=headers, timeout=timeout)

    async def delete(self, key: str, *, last: int | None = None, ttl: float | None = None,
                     timeout: float | None = None) -> int:
        """Write a tombstone for ``key`` (with ``last``: only while it is at that revision).

        Raises:
            as :meth:`write`.
        """
        return await self.write(key, b"", last=last, ttl=ttl, op="DEL", timeout=timeout)

    def fence_headers(self, key: str, revision: int) -> dict[str, str]:
        """Headers making a write succeed only while ``key`` is still at ``revision``."""
        return {"Nats-Expected-Last-Subject-Sequence": str(revision),
                "Nats-Expected-Last-Subject-Sequence-Subject": self.prefix + key}

    # ---- watching ---------------------------------------------------------------------------
    async def watch(self, key: str) -> KvWatch:
        """Follow ``key``: see :class:`KvWatch`.

        Needs permission to subscribe to ``$KV.<bucket>.<key>`` (and to read the key). The server
        refuses a subscription asynchronously (to the connection's error callback): a refused
        watch yields the initial state and then nothing, so callers bound their waits.

        Raises:
            StoreUnavailableError / StoreError: the subscription could not be made.
        """
        watch = KvWatch(self, key)
        await watch._start()
        return watch

    async def aclose(self) -> None:
        """Let go of the connection's reply inbox (the client stays open; an ``api`` given to the
        constructor stays open)."""
        if self._own_api:
            await self.api.aclose()


_WATCH_REREADS = (0.02, 0.05, 0.1, 0.2)


class KvWatch:
    """The stored state of one key, re-read each time a write to it is published.

    A core NATS subscription on the key's subject tells that someone wrote (or tried to write:
    a refused compare-and-set is published too); the watch then reads the key and yields its
    stored state when its revision differs from the last one yielded. Iterating yields the
    current state first (:class:`KvEntry`, or ``None`` for no value). Values expiring on the
    server produce no message, so a watcher bounds its waits itself.

    No JetStream consumer is created (so no consumer permission is needed, and no nats-py
    ``KeyValue`` watch, whose handling of limit markers is wrong).
    """

    def __init__(self, bucket: KvBucket, key: str) -> None:
        self._bucket = bucket
        self.key = key
        self._sub: Any = None
        self._hints: asyncio.Queue[str] = asyncio.Queue()
        self._last: int | None = None  # revision yielded last (0: no value)

    async def _start(self) -> None:
        try:
            self._sub = await self._bucket.nc.subscribe(self._bucket.subject(self.key), cb=self._on_msg)
        except Exception as exc:
            raise translate_nats_error(exc, f"watching {self.key!r} of KV bucket {self._bucket.name!r}") from exc
        self._hints.put_nowait("PUT")  # the initial read

    async def _on_msg(self, msg: Msg) -> None:
        self._hints.put_nowait(_op_of(msg.headers))

    def __aiter__(self) -> AsyncIterator[KvEntry | None]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[KvEntry | None]:
        while self._sub is not None:
            op = await self._hints.get()
            while not self._hints.empty():  # a burst of hints needs one read
                following = self._hints.get_nowait()
                op = following if following != "PUT" else op
            if self._sub is None:
                return
            entry = await self._read(expect_tombstone=op != "PUT")
            revision = entry.revision if entry is not None else 0
            if revision != self._last:
                self._last = revision
                yield entry

    async def _read(self, *, expect_tombstone: bool) -> KvEntry | None:
        entry = await self._bucket.get(self.key)
        if expect_tombstone:  # the message may reach us before the stream stored it
            for pause in _WATCH_REREADS:
                if entry is None or entry.deleted:
                    break
                await asyncio.sleep(pause)
                entry = await self._bucket.get(self.key)
        return entry

    async def stop(self) -> None:
        """Stop following the key (idempotent)."""
        sub, self._sub = self._sub, None
        self._hints.put_nowait("PUT")  # wake an iterator waiting for a hint
        if sub is not None and not self._bucket.nc.is_closed:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
