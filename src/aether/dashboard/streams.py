"""Read-only views of the streams and projections on a NATS server (for the dashboard).

Everything here only *reads* JetStream: ``STREAM.LIST`` (configuration and state of every
stream), ``STREAM.INFO`` with a subject filter (dead letters per projection) and batched
direct gets of the last value of every key (projection checkpoints and leases). Nothing is
created, changed or consumed.

Which streams are Aether event streams: those holding exactly the subjects
``<prefix>.<stream name>.>`` (what :class:`~aether.store.JetStreamEventStore` creates), apart
from dead-letter streams (``__DLQ_…``). A stream named ``<base>__<encoded namespace>`` belongs
to that namespace. A partitioned namespace spreads over several streams (``<stream>___p<N>``,
see :mod:`aether.store.partitioning`, whose metadata ``aether_partition`` names the index; a
stream carrying ``aether.namespace`` / ``aether.partition`` metadata is placed by those): they
are grouped with the other partitions of their namespace.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import msgspec

from aether._nats import JetStreamApiError, JsApi
from aether.errors import AetherError, InvalidNameError
from aether.names import decode_token
from aether.projection.checkpoint import Checkpoint
from aether.store.partitioning import PARTITION_METADATA_KEY, parse_partition_stream_name, partition_stream_name

__all__ = ["ProjectionView", "StreamView", "read_projections", "read_streams"]

_DLQ = "__DLQ_"
_decode_checkpoint = msgspec.json.Decoder(Checkpoint).decode


@dataclass
class StreamView:
    """One Aether event stream (one namespace, or one partition of a partitioned namespace)."""

    name: str
    base: str
    namespace: str | None
    partition: int | None
    subjects: list[str]
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumers: int
    replicas: int
    leader: str | None
    replicas_current: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ProjectionView:
    """One projection's checkpoint over one stream, with its lag, dead letters and lease holder."""

    name: str
    stream: str
    position: int
    lag: int | None
    dead_letters: int
    holder: str | None
    saved_by: str
    term: int
    updated: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def list_streams(api: JsApi) -> list[dict[str, Any]]:
    """Every stream's info (configuration, state, cluster), all pages.

    Raises:
        PermissionDeniedError / StoreError / StoreUnavailableError / AetherTimeoutError.
    """
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        reply = await api.api("STREAM.LIST", {"offset": offset})
        page = reply.get("streams") or []
        found.extend(page)
        offset += len(page)
        if not page or offset >= int(reply.get("total", 0)):
            return found


def _namespace_of(name: str, metadata: dict[str, str]) -> tuple[str, str | None, int | None]:
    """(base, namespace, partition) of a stream name (metadata first, then the naming rules)."""
    partition: int | None = None
    for key in ("aether.partition", PARTITION_METADATA_KEY):
        if key in metadata and partition is None:
            with contextlib.suppress(ValueError):
                partition = int(metadata[key])
    rest = name
    parsed = parse_partition_stream_name(name)
    if parsed is not None:
        rest = parsed[0]
        if partition is None:
            partition = parsed[1]
    base, sep, encoded = rest.partition("__")
    namespace: str | None = metadata.get("aether.namespace")
    if namespace is None and sep:
        try:
            namespace = decode_token(encoded)
        except InvalidNameError:
            base, namespace = rest, None
    return metadata.get("aether.stream", base), namespace, partition


def stream_view(info: dict[str, Any]) -> StreamView | None:
    """The view of one ``STREAM.LIST`` entry, or ``None`` when it is not an Aether event stream."""
    config = info.get("config") or {}
    name = str(config.get("name", ""))
    subjects = list(config.get("subjects") or [])
    if not name or name.startswith(_DLQ) or name.startswith("KV_") or len(subjects) != 1:
        return None
    tokens = subjects[0].split(".")
    if len(tokens) < 3 or tokens[-1] != ">" or tokens[-2] != name:
        return None
    state = info.get("state") or {}
    cluster = info.get("cluster") or {}
    base, namespace, partition = _namespace_of(name, dict(config.get("metadata") or {}))
    return StreamView(
        name=name, base=base, namespace=namespace, partition=partition, subjects=subjects,
        messages=int(state.get("messages", 0)), bytes=int(state.get("bytes", 0)),
        first_seq=int(state.get("first_seq", 0)), last_seq=int(state.get("last_seq", 0)),
        consumers=int(state.get("consumer_count", 0)), replicas=int(config.get("num_replicas", 1)),
        leader=cluster.get("leader"),
        replicas_current=[str(r.get("name")) for r in cluster.get("replicas") or [] if r.get("current")])


def read_streams(infos: list[dict[str, Any]]) -> list[StreamView]:
    """The Aether event streams among ``infos`` (from :func:`list_streams`), by namespace."""
    views = [v for v in (stream_view(info) for info in infos) if v is not None]
    views.sort(key=lambda v: (v.base, v.namespace or "", v.partition or 0, v.name))
    return views


async def _last_values(api: JsApi, stream: str, subject_filter: str) -> dict[str, bytes]:
    """The last message of every subject under ``subject_filter`` in ``stream`` (a batched direct get)."""
    body = msgspec.json.encode({"multi_last": [subject_filter], "batch": 1000})
    msgs = await api.request_many(f"{api.api_prefix}.DIRECT.GET.{stream}", body, what=f"reading {stream}")
    values: dict[str, bytes] = {}
    for msg in msgs:
        headers = msg.headers or {}
        if headers.get("Status") is not None:
            continue
        subject = headers.get("Nats-Subject", "")
        if headers.get("KV-Operation") in ("DEL", "PURGE"):
            values.pop(subject, None)
            continue
        values[subject] = bytes(msg.data)
    return values


async def _subject_counts(api: JsApi, stream: str, subject_filter: str) -> dict[str, int]:
    reply = await api.api(f"STREAM.INFO.{stream}", {"subjects_filter": subject_filter})
    subjects = (reply.get("state") or {}).get("subjects") or {}
    return {str(k): int(v) for k, v in subjects.items()}


async def read_projections(api: JsApi, infos: list[dict[str, Any]], streams: list[StreamView], *,
                           checkpoint_bucket: str = "aether-projections",
                           problems: list[str] | None = None) -> list[ProjectionView]:
    """Every projection that saved a checkpoint in ``checkpoint_bucket``.

    Lag is the stream's last sequence minus the checkpoint (``None`` when the stream is not
    listed); the holder comes from any lease bucket ``aether-projection-leases-*``; dead
    letters from the stream's dead-letter stream (``__DLQ_<stream>``). Parts that cannot be
    read are skipped and described in ``problems``.
    """
    problems = problems if problems is not None else []
    names = {str((i.get("config") or {}).get("name", "")): i for i in infos}
    kv_stream = f"KV_{checkpoint_bucket}"
    if kv_stream not in names:
        return []
    try:
        checkpoints = await _last_values(api, kv_stream, f"$KV.{checkpoint_bucket}.>")
    except AetherError as exc:
        problems.append(f"checkpoints: {exc}")
        return []
    holders: dict[str, str] = {}
    for lease_stream in sorted(n for n in names if n.startswith("KV_aether-projection-leases-")):
        bucket = lease_stream[3:]
        try:
            for subject, value in (await _last_values(api, lease_stream, f"$KV.{bucket}.>")).items():
                if value:
                    holders[subject[len(f"$KV.{bucket}."):]] = value.decode(errors="replace")
        except AetherError as exc:
            problems.append(f"leases in {bucket}: {exc}")
    last_seq = {s.name: s.last_seq for s in streams}
    dead: dict[str, dict[str, int]] = {}
    views: list[ProjectionView] = []
    prefix = f"$KV.{checkpoint_bucket}."
    for subject, value in sorted(checkpoints.items()):
        key = subject[len(prefix):]
        stream, _, encoded = key.rpartition(".")
        try:
            name = decode_token(encoded)
            checkpoint = _decode_checkpoint(value)
        except (InvalidNameError, msgspec.DecodeError, msgspec.ValidationError):
            continue
        dlq = _DLQ + stream
        if dlq in names and dlq not in dead:
            try:
                dead[dlq] = await _subject_counts(api, dlq, ">")
            except (AetherError, JetStreamApiError) as exc:
                problems.append(f"dead letters of {stream}: {exc}")
                dead[dlq] = {}
        dead_letters = sum(n for s, n in dead.get(dlq, {}).items() if s.endswith(f".{stream}.{encoded}"))
        lag: int | None = None
        if checkpoint.positions is not None:  # a partitioned namespace: one position per partition
            heads = [last_seq.get(partition_stream_name(stream, i)) for i in range(len(checkpoint.positions))]
            if all(h is not None for h in heads):
                lag = sum(max(0, (h or 0) - p) for h, p in zip(heads, checkpoint.positions, strict=True))
        elif (head := last_seq.get(stream)) is not None:
            lag = max(0, head - checkpoint.position)
        views.append(ProjectionView(
            name=name, stream=stream, position=checkpoint.position, lag=lag, dead_letters=dead_letters,
            holder=holders.get(key), saved_by=checkpoint.node, term=checkpoint.term,
            updated=checkpoint.updated.isoformat()))
    return views

