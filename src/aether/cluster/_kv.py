"""The cluster's JetStream KV bucket, spoken directly over the JetStream API.

One bucket per cluster (``aether-cluster-<cluster>``, stream ``KV_aether-cluster-<cluster>``)
holds the leader lease (``leader``), the shard map (``map``) and one heartbeat key per node
(``node.<encoded id>``). It follows the KV conventions (``nats kv`` can read it) with
``history=1`` and per-message TTLs (``allow_msg_ttl``): leases and heartbeats carry a TTL,
the map does not. Limit markers are left off.

Going below nats-py's KV API gives what it lacks: TTLs on updates, compare-and-set on a
*different* key (``Nats-Expected-Last-Subject-Sequence-Subject``, used to fence the leader's
writes with its lease) and one-request reads of many keys (batch direct get ``multi_last``).
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any, Literal

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from aether._nats import (
    ERR_STREAM_NAME_IN_USE,
    ERR_STREAM_NOT_FOUND,
    ERR_WRONG_LAST_SEQUENCE,
    ERR_WRONG_LAST_SEQUENCE_CLUSTERED,
    JetStreamApiError,
    JsApi,
)
from aether.errors import ClusterError, InvalidNameError, StoreError

__all__ = ["ClusterBucket", "KvConflict", "KvEntry", "bucket_name", "validate_cluster_name"]

_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NS = 1_000_000_000
ERR_NO_MESSAGE = 10037
_encode_json = msgspec.json.encode
_decode_json = msgspec.json.decode

Op = Literal["PUT", "DEL", "PURGE"]


def validate_cluster_name(cluster: object) -> str:
    """Check a cluster name (``A-Z a-z 0-9 _ -``, 1..64 characters) and return it.

    Raises:
        InvalidNameError: any other value.
    """
    if not isinstance(cluster, str) or not _CLUSTER_NAME.fullmatch(cluster):
        raise InvalidNameError(f"cluster name must be 1..64 characters of A-Z a-z 0-9 _ -, got {cluster!r}")
    return cluster


def bucket_name(cluster: str) -> str:
    """The KV bucket of ``cluster``."""
    return f"aether-cluster-{validate_cluster_name(cluster)}"


class KvConflict(ClusterError):
    """A compare-and-set write found another revision (internal; callers turn it into a decision)."""


class KvEntry(msgspec.Struct, frozen=True):
    """The last message of one key: value, revision (stream sequence), operation and headers."""

    key: str
    value: bytes
    revision: int
    op: Op
    headers: dict[str, str]

    @property
    def deleted(self) -> bool:
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


class ClusterBucket:
    """Reads and compare-and-set writes on the cluster bucket.

    Args:
        nc: a connected nats-py client (never closed here).
        cluster: the cluster name.
        replicas: stream replicas (3 on a NATS cluster).
        storage: ``"file"`` or ``"memory"``.
        timeout: default seconds to wait for a server reply.
    """

    def __init__(self, nc: Client, cluster: str, *, replicas: int = 1, storage: str = "file",
                 timeout: float = 2.0) -> None:
        self.cluster = validate_cluster_name(cluster)
        self.name = bucket_name(cluster)
        self.stream = f"KV_{self.name}"
        self.prefix = f"$KV.{self.name}."
        self.replicas = replicas
        self.storage = storage
        self.api = JsApi(nc, timeout=timeout)
        self.nc = nc
        self._direct = f"$JS.API.DIRECT.GET.{self.stream}"

    def subject(self, key: str) -> str:
        """The subject of ``key``."""
        return self.prefix + key

    # ---- bucket ---------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "name": self.stream,
            "subjects": [f"{self.prefix}>"],
            "retention": "limits",
            "max_msgs_per_subject": 1,
            "discard": "new",
            "allow_rollup_hdrs": True,
            "deny_delete": True,
            "allow_direct": True,
            "allow_msg_ttl": True,
            "num_replicas": self.replicas,
            "storage": self.storage,
            "max_age": 0,
            "duplicate_window": 2 * 60 * _NS,
        }

    async def ensure(self) -> None:
        """Create the bucket when missing; enable per-message TTLs on an older bucket.

        Raises:
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        try:
            info = await self.api.api(f"STREAM.INFO.{self.stream}")
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise
            try:
                await self.api.api(f"STREAM.CREATE.{self.stream}", self._config())
                return
            except JetStreamApiError as create_exc:
                if create_exc.err_code != ERR_STREAM_NAME_IN_USE:
                    raise
                info = await self.api.api(f"STREAM.INFO.{self.stream}")
        config = info["config"]
        if not config.get("allow_msg_ttl") or not config.get("allow_direct"):
            config.update(allow_msg_ttl=True, allow_direct=True)
            await self.api.api(f"STREAM.UPDATE.{self.stream}", config)

    async def destroy(self) -> None:
        """Delete the bucket and everything in it (tests and tooling)."""
        try:
            await self.api.api(f"STREAM.DELETE.{self.stream}")
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise

    # ---- reads ------------------------------------------------------------------------------
    def _entry_from_direct(self, msg: Msg) -> KvEntry | None:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "404":
            return None
        if status is not None:
            raise StoreError(f"reading the cluster bucket: {status} {headers.get('Description', '')}")
        subject = headers.get("Nats-Subject", "")
        return KvEntry(subject[len(self.prefix):], msg.data, int(headers["Nats-Sequence"]), _op_of(headers),
                       dict(headers))

    async def get(self, key: str, *, linearizable: bool = False, timeout: float | None = None) -> KvEntry | None:
        """The last message of ``key``; ``None`` when it has none (never written or expired).

        With ``linearizable`` the stream leader answers (no stale replica read).

        Raises:
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        subject = self.prefix + key
        if not linearizable:
            msg = await self.api.request(self._direct, _encode_json({"last_by_subj": subject}), timeout=timeout,
                                         what=f"reading {key!r} of cluster {self.cluster!r}")
            return self._entry_from_direct(msg)
        try:
            reply = await self.api.api(f"STREAM.MSG.GET.{self.stream}", {"last_by_subj": subject}, timeout=timeout)
        except JetStreamApiError as exc:
            if exc.err_code == ERR_NO_MESSAGE:
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
                                           what=f"listing {prefix!r} of cluster {self.cluster!r}")
        entries: list[KvEntry] = []
        for msg in msgs:
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is None:
                entry = self._entry_from_direct(msg)
                if entry is not None:
                    entries.append(entry)
            elif status not in ("204", "404"):
                raise StoreError(f"listing the cluster bucket: {status} {headers.get('Description', '')}")
        return entries

    # ---- writes -----------------------------------------------------------------------------
    async def write(self, key: str, value: bytes, *, last: int | None = None, ttl: float | None = None,
                    op: Op = "PUT", headers: dict[str, str] | None = None, timeout: float | None = None) -> int:
        """Write ``key`` and return the new revision.

        Args:
            last: compare-and-set: the revision the key must have now (0: no live message).
            ttl: seconds the message lives (rounded UP to whole seconds, the server's unit).
            op: ``"DEL"`` writes a tombstone.
            headers: extra headers (e.g. a fence on another key).

        Raises:
            KvConflict: the compare-and-set (or a fence in ``headers``) failed.
            StoreError / StoreUnavailableError / AetherTimeoutError: server trouble.
        """
        hdrs: dict[str, str] = {}
        if last is not None:
            hdrs["Nats-Expected-Last-Subject-Sequence"] = str(last)
        if ttl is not None:
            hdrs["Nats-TTL"] = f"{max(1, math.ceil(ttl))}s"
        if op != "PUT":
            hdrs["KV-Operation"] = op
        if headers:
            hdrs.update(headers)
        ack = await self.api.publish_acked(self.prefix + key, value, hdrs, timeout=timeout,
                                           what=f"writing {key!r} of cluster {self.cluster!r}")
        if ack.error is not None:
            # a replicated bucket also answers 10164 when another write of the key is in flight
            if ack.error.err_code in (ERR_WRONG_LAST_SEQUENCE, ERR_WRONG_LAST_SEQUENCE_CLUSTERED):
                raise KvConflict(f"{key!r}: {ack.error.description}")
            raise JetStreamApiError(f"write {key!r}", ack.error.code, ack.error.err_code, ack.error.description)
        return ack.seq

    def fence_headers(self, key: str, revision: int) -> dict[str, str]:
        """Headers making a write succeed only while ``key`` is still at ``revision``."""
        return {"Nats-Expected-Last-Subject-Sequence": str(revision),
                "Nats-Expected-Last-Subject-Sequence-Subject": self.prefix + key}

    async def aclose(self) -> None:
        """Release the reply subscription (the client stays open)."""
        await self.api.aclose()
