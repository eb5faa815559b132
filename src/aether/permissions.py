"""The exact NATS permissions each Aether component needs, as nats-server allow lists.

Every function returns a :class:`Permissions` mapping ready for the ``permissions`` field of a
user in a nats-server ``authorization`` block (or an account's user), e.g.::

    from aether.permissions import authorization_config, merge, bus_permissions, store_permissions

    alice = merge(store_permissions("EV", "tenant-a", inbox_prefix="_INBOX_tenant_a", may_create=True),
                  bus_permissions(["tenant-a"], publish_namespaces=["tenant-a"], inbox_prefix="_INBOX_tenant_a"))
    print(authorization_config([{"user": "alice", "password": "...", "permissions": alice}]))

and the client connects with the same inbox prefix
(``nats.connect(..., inbox_prefix="_INBOX_tenant_a")``) so that replies meant for one tenant
can never be read by another. The lists name exact streams, buckets, keys and subjects: a
user holding the lists of namespace ``tenant-a`` is refused by the server for anything of
``tenant-b``, and Aether reports that refusal as :class:`~aether.errors.PermissionDeniedError`.

``docs/security.md`` explains every subject. Functions:

* :func:`store_permissions` — a :class:`~aether.store.JetStreamEventStore` on one namespace;
* :func:`bus_permissions` — a :class:`~aether.bus.NATSEventBus` on some namespaces;
* :func:`cluster_node_permissions` / :func:`cluster_client_permissions` — a
  :class:`~aether.cluster.ClusterManager` node / a :class:`~aether.cluster.ClusterClient`;
* :func:`projection_permissions` / :func:`catch_up_permissions` — a
  :class:`~aether.projection.ProjectionRunner` / a :class:`~aether.projection.CatchUpSubscription`;
* :func:`dashboard_permissions` — ``aether dashboard`` (reads only);
* :func:`merge` combines several (one connection used by several components);
  :func:`authorization_config` renders a nats-server ``authorization`` block.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from aether.bus.wire import DEFAULT_SUBJECT_PREFIX as BUS_SUBJECT_PREFIX
from aether.bus.wire import check_bus_prefix, pattern_subject
from aether.cluster.naming import bucket_name, validate_cluster_name
from aether.errors import InvalidInputError, InvalidNameError
from aether.names import (
    encode_token,
    stream_name,
    validate_actor_id,
    validate_namespace_pattern,
    validate_subject_prefix,
)
from aether.projection.checkpoint import checkpoint_key
from aether.projection.deadletter import dead_letter_stream_name
from aether.projection.options import ProjectionOptions
from aether.projection.projection import validate_projection_name
from aether.store.partitioning import partition_stream_name, validate_partitions

__all__ = [
    "AllowList",
    "Permissions",
    "authorization_config",
    "bus_permissions",
    "catch_up_permissions",
    "cluster_client_permissions",
    "cluster_node_permissions",
    "dashboard_permissions",
    "inbox_permissions",
    "merge",
    "projection_permissions",
    "store_permissions",
]

JS_API = "$JS.API"
STORE_SUBJECT_PREFIX = "aether"
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
CLUSTER_SUBJECT_PREFIX = "_aether"


class AllowList(TypedDict, total=False):
    """``{"allow": [subject, ...]}``: the subjects (wildcards allowed) a user may use.

    nats-server reads an EMPTY allow list as "no restriction", so an empty set of subjects is
    written as ``{"deny": [">"]}`` instead (``allow`` absent).
    """

    allow: list[str]
    deny: list[str]


class _Required(TypedDict):
    publish: AllowList
    subscribe: AllowList


class Permissions(_Required, total=False):
    """A nats-server user's ``permissions``: what it may publish and subscribe to.

    ``allow_responses`` (cluster nodes) lets the user answer the requests it receives (publish
    once to each received reply subject) without any publish permission on other clients'
    inboxes.
    """

    allow_responses: bool


def _inbox(inbox_prefix: str) -> str:
    return validate_subject_prefix(inbox_prefix)


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _allow(subjects: Iterable[str]) -> AllowList:
    allowed = _dedupe(subjects)
    return {"allow": allowed} if allowed else {"deny": [">"]}  # an empty allow list would allow everything


def _allowed(permissions: Permissions, kind: str) -> list[str]:
    return list(permissions["publish" if kind == "publish" else "subscribe"].get("allow", []))


def _make(publish: Iterable[str], subscribe: Iterable[str], *, allow_responses: bool = False) -> Permissions:
    perms: Permissions = {"publish": _allow(publish), "subscribe": _allow(subscribe)}
    if allow_responses:
        perms["allow_responses"] = True
    return perms


def inbox_permissions(*, inbox_prefix: str) -> Permissions:
    """Receiving replies: subscribe to ``<inbox_prefix>.>`` (every Aether component needs it).

    JetStream API replies, publish acknowledgements, cluster replies and consumer deliveries
    all arrive on subjects under the connection's inbox prefix. Give each tenant its own
    prefix (``nats.connect(..., inbox_prefix="_INBOX_tenant_a")``): a user allowed to
    subscribe to the shared ``_INBOX.>`` could read every other client's replies.

    Raises:
        InvalidNameError: ``inbox_prefix`` is not dot-separated ``A-Z a-z 0-9 _ -`` tokens.
    """
    return _make([], [f"{_inbox(inbox_prefix)}.>"])


def _streams(stream: str, partitions: int) -> list[str]:
    """The streams of a namespace: itself, or its partition streams."""
    if validate_partitions(partitions) == 1:
        return [stream]
    return [partition_stream_name(stream, i) for i in range(partitions)]


def store_permissions(stream_base: str, namespace: str | None = None, *, inbox_prefix: str,
                      may_create: bool = False, read_only: bool = False, snapshots: bool = True,
                      subject_prefix: str = STORE_SUBJECT_PREFIX, partitions: int = 1) -> Permissions:
    """What a :class:`~aether.store.JetStreamEventStore` on ``namespace`` needs.

    With ``partitions=P > 1`` every item below is given for each partition stream
    ``<stream>___p<i>``, plus ``$JS.API.STREAM.INFO.<stream>`` (opening checks that no
    unpartitioned stream holds the namespace) and, with ``may_create``,
    ``$JS.API.STREAM.LEADER.STEPDOWN.<partition>`` (new replicated partitions get their leaders
    spread over the servers). A P = 1 store that may create its stream also needs
    ``$JS.API.STREAM.INFO.<stream>___p0`` (it checks the namespace is not partitioned first).

    Publish:

    * ``<prefix>.<stream>.e.*`` — append events (one subject per actor);
    * ``<prefix>.<stream>.s.*`` — save snapshots (unless ``snapshots=False``);
    * ``<prefix>.<stream>.x.*`` — keep the actors' sequence indexes, which make history reads
      cost the actor's events only (derived data written by reads; a ``read_only`` store reads
      without writing them);
    * ``$JS.API.DIRECT.GET.<stream>`` — history and snapshot reads (any replica may answer);
    * ``$JS.API.STREAM.MSG.GET.<stream>`` — reads the concurrency decisions rely on, answered by
      the stream leader: ``get_latest_version``, the check after a conflict or a de-duplicated
      append, and the current snapshot before ``save_snapshot``;
    * ``$JS.API.STREAM.INFO.<stream>`` — ``create()`` checks the stream; ``actor_ids()``;
    * ``$JS.API.STREAM.PURGE.<stream>`` — ``save_snapshot()`` purges the actor's older
      snapshots (``keep: 1``); only with snapshots and not ``read_only``;
    * ``$JS.API.STREAM.CREATE.<stream>`` / ``$JS.API.STREAM.UPDATE.<stream>`` — only with
      ``may_create`` (otherwise an administrator creates the stream and the store is opened
      with ``create_stream=False``).

    Subscribe: ``<inbox_prefix>.>`` (replies).

    Args:
        stream_base: the store's base stream name.
        namespace: the store's namespace (``None``: none).
        inbox_prefix: the client's inbox prefix.
        may_create: allow creating and upgrading the stream.
        read_only: reads only: no appends, snapshots or purges.
        snapshots: allow saving snapshots (needs the purge permission).
        subject_prefix: ``JetStreamOptions.subject_prefix``.
        partitions: the namespace's partition count (``JetStreamOptions.partitions``).

    Raises:
        InvalidNameError: a name breaks the rules of :mod:`aether.names`.
        InvalidInputError: bad ``partitions``.
    """
    stream = stream_name(stream_base, namespace)
    prefix = validate_subject_prefix(subject_prefix)
    streams = _streams(stream, partitions)
    publish: list[str] = []
    if partitions > 1:
        publish.append(f"{JS_API}.STREAM.INFO.{stream}")
    for name in streams:
        publish += [f"{JS_API}.DIRECT.GET.{name}", f"{JS_API}.STREAM.MSG.GET.{name}", f"{JS_API}.STREAM.INFO.{name}"]
        if not read_only:
            publish += [f"{prefix}.{name}.e.*", f"{prefix}.{name}.x.*"]
            if snapshots:
                publish += [f"{prefix}.{name}.s.*", f"{JS_API}.STREAM.PURGE.{name}"]
        if may_create:
            publish += [f"{JS_API}.STREAM.CREATE.{name}", f"{JS_API}.STREAM.UPDATE.{name}"]
            if partitions > 1:
                publish.append(f"{JS_API}.STREAM.LEADER.STEPDOWN.{name}")
    if may_create and partitions == 1:
        publish.append(f"{JS_API}.STREAM.INFO.{partition_stream_name(stream, 0)}")
    return _make(publish, [f"{_inbox(inbox_prefix)}.>"])


def bus_permissions(namespace_patterns: Iterable[str] = (), *, publish_namespaces: Iterable[str] = (),
                    inbox_prefix: str, subject_prefix: str = BUS_SUBJECT_PREFIX) -> Permissions:
    """What a :class:`~aether.bus.NATSEventBus` needs to subscribe to ``namespace_patterns``
    and publish to ``publish_namespaces``.

    A namespace (pattern) ``P`` maps to ONE subject filter, the one the bus itself uses:
    ``<prefix>.P.*`` (the last token is the event type), and for ``P = Q.>``
    ``<prefix>.Q.*.>``. So ``"tenant-a"`` allows the namespace ``tenant-a`` only and
    ``"tenant-a.>"`` every namespace below it (not ``tenant-a`` itself: list both for both).
    A subscription to a narrower pattern is allowed; a wider one (``>``, ``*``) is refused by
    the server and ends the bus subscription with :class:`~aether.errors.PermissionDeniedError`.

    Also: subscribe and publish ``<inbox_prefix>.>`` — the bus confirms a subscription is
    registered (and :meth:`~aether.bus.NATSEventBus.flush` works) by sending a probe message
    to its own inbox.

    Args:
        namespace_patterns: namespaces or patterns the bus may subscribe to.
        publish_namespaces: namespaces (or patterns) the bus may publish to.
        inbox_prefix: the client's inbox prefix.
        subject_prefix: the bus's ``subject_prefix``.

    Raises:
        InvalidNameError: a bad pattern, prefix or inbox prefix.
    """
    prefix = check_bus_prefix(subject_prefix)
    inbox = _inbox(inbox_prefix)
    subscribe = [pattern_subject(prefix, validate_namespace_pattern(p)) for p in _strings(namespace_patterns)]
    publish = [pattern_subject(prefix, validate_namespace_pattern(p)) for p in _strings(publish_namespaces)]
    return _make([*publish, f"{inbox}.>"], [*subscribe, f"{inbox}.>"])


def _strings(values: Iterable[str]) -> list[str]:
    if isinstance(values, str):
        raise InvalidInputError("pass a list of namespaces, not a single string")
    return list(values)


def _cluster_subjects(cluster: str, subject_prefix: str) -> tuple[str, str, str]:
    bucket = bucket_name(validate_cluster_name(cluster))
    prefix = validate_subject_prefix(subject_prefix)
    return bucket, f"KV_{bucket}", f"{prefix}.cluster.{cluster}.node"


def cluster_node_permissions(cluster: str, node_id: str, *, inbox_prefix: str, may_create: bool = True,
                             status_requests: bool = False,
                             subject_prefix: str = CLUSTER_SUBJECT_PREFIX) -> Permissions:
    """What one :class:`~aether.cluster.ClusterManager` node of ``cluster`` needs.

    The cluster's KV bucket ``aether-cluster-<cluster>`` (stream ``KV_aether-cluster-<cluster>``)
    holds the leader lease, the shard map and one heartbeat per node. Publish:

    * ``$KV.<bucket>.>`` — heartbeats (``node.<id>``; also tombstones of failed nodes), the
      leader lease (``leader``) and the shard map (``map``);
    * ``$JS.API.DIRECT.GET.<kv stream>`` — reads of keys and of all heartbeats at once;
    * ``$JS.API.STREAM.MSG.GET.<kv stream>`` — linearizable reads (lease, map, own heartbeat);
    * ``$JS.API.STREAM.INFO.<kv stream>`` — start-up check of the bucket;
    * ``$JS.API.STREAM.CREATE/UPDATE.<kv stream>`` — only with ``may_create``;
    * ``<prefix>.cluster.<cluster>.node.*.rpc`` — requests routed to the owning node;
    * ``<prefix>.cluster.<cluster>.node.*.status`` — only with ``status_requests``.

    Subscribe: the hints ``$KV.<bucket>.leader``, ``$KV.<bucket>.map``,
    ``$KV.<bucket>.node.*``; the node's own ``…node.<encoded id>.rpc`` and ``….status``;
    ``<inbox_prefix>.>``. ``allow_responses`` lets it answer requests from any node or client.

    Nodes of one cluster trust each other (any node may write the lease, the map and evict a
    failed node); different clusters are isolated from each other.

    Raises:
        InvalidNameError: a bad cluster name, node id, prefix or inbox prefix.
    """
    bucket, kv_stream, nodes = _cluster_subjects(cluster, subject_prefix)
    me = f"{nodes}.{encode_token(validate_actor_id(node_id))}"
    publish = [f"$KV.{bucket}.>", f"{JS_API}.DIRECT.GET.{kv_stream}", f"{JS_API}.STREAM.MSG.GET.{kv_stream}",
               f"{JS_API}.STREAM.INFO.{kv_stream}"]
    if may_create:
        publish += [f"{JS_API}.STREAM.CREATE.{kv_stream}", f"{JS_API}.STREAM.UPDATE.{kv_stream}"]
    publish.append(f"{nodes}.*.rpc")
    if status_requests:
        publish.append(f"{nodes}.*.status")
    subscribe = [f"$KV.{bucket}.leader", f"$KV.{bucket}.map", f"$KV.{bucket}.node.*", f"{me}.rpc", f"{me}.status",
                 f"{_inbox(inbox_prefix)}.>"]
    return _make(publish, subscribe, allow_responses=True)


def cluster_client_permissions(cluster: str, *, inbox_prefix: str, status_requests: bool = False,
                               subject_prefix: str = CLUSTER_SUBJECT_PREFIX) -> Permissions:
    """What a :class:`~aether.cluster.ClusterClient` of ``cluster`` needs (it reads, never writes).

    Publish: ``$JS.API.DIRECT.GET.<kv stream>`` and ``$JS.API.STREAM.MSG.GET.<kv stream>``
    (reading the shard map), ``<prefix>.cluster.<cluster>.node.*.rpc`` (requests) and, with
    ``status_requests``, ``….node.*.status``. Subscribe: ``$KV.<bucket>.map`` (map change
    hints) and ``<inbox_prefix>.>``.

    Raises:
        InvalidNameError: a bad cluster name, prefix or inbox prefix.
    """
    bucket, kv_stream, nodes = _cluster_subjects(cluster, subject_prefix)
    publish = [f"{JS_API}.DIRECT.GET.{kv_stream}", f"{JS_API}.STREAM.MSG.GET.{kv_stream}", f"{nodes}.*.rpc"]
    if status_requests:
        publish.append(f"{nodes}.*.status")
    return _make(publish, [f"$KV.{bucket}.map", f"{_inbox(inbox_prefix)}.>"])


def catch_up_permissions(stream_base: str, namespace: str | None = None, *, inbox_prefix: str,
                         subject_prefix: str = STORE_SUBJECT_PREFIX, partitions: int = 1) -> Permissions:
    """What a :class:`~aether.projection.CatchUpSubscription` over one namespace's stream needs
    (with ``partitions=P > 1``: the same for each partition stream).

    Publish:

    * ``$JS.API.CONSUMER.CREATE.<stream>.*`` / ``$JS.API.CONSUMER.DELETE.<stream>.*`` — the
      short-lived, ack-less ordered consumer (named ``aether-<random>``), recreated after a gap;
    * ``$JS.FC.<stream>.>`` — answers to the consumer's flow-control requests;
    * ``$JS.API.STREAM.MSG.GET.<stream>`` — :meth:`~aether.projection.CatchUpSubscription.head`.

    Subscribe: ``<inbox_prefix>.>`` (the consumer delivers to a fresh inbox).

    ``subject_prefix`` is accepted for symmetry with the store (the consumer's filter is
    part of the create request's body, not of its subject).

    Raises:
        InvalidNameError: a name breaks the rules of :mod:`aether.names`.
    """
    stream = stream_name(stream_base, namespace)
    validate_subject_prefix(subject_prefix)
    publish: list[str] = []
    for name in _streams(stream, partitions):
        publish += [f"{JS_API}.CONSUMER.CREATE.{name}.*", f"{JS_API}.CONSUMER.DELETE.{name}.*",
                    f"$JS.FC.{name}.>", f"{JS_API}.STREAM.MSG.GET.{name}"]
    return _make(publish, [f"{_inbox(inbox_prefix)}.>"])


def _kv_key(bucket: str, key: str, *, may_create: bool) -> list[str]:
    stream = f"KV_{bucket}"
    subjects = [f"{JS_API}.STREAM.INFO.{stream}", f"{JS_API}.DIRECT.GET.{stream}.$KV.{bucket}.{key}",
                f"$KV.{bucket}.{key}"]
    if may_create:
        subjects.append(f"{JS_API}.STREAM.CREATE.{stream}")
    return subjects


def projection_permissions(stream_base: str, namespace: str | None, name: str, *, inbox_prefix: str,
                           may_create: bool = True, clustered: bool = False,
                           options: ProjectionOptions | None = None,
                           subject_prefix: str = STORE_SUBJECT_PREFIX, partitions: int = 1) -> Permissions:
    """What a :class:`~aether.projection.ProjectionRunner` named ``name`` over one namespace needs.

    Everything of :func:`catch_up_permissions`, and publish:

    * ``$JS.API.STREAM.INFO.<stream>`` — start-up check of the source stream (with
      ``partitions=P > 1``: of every partition stream; the checkpoint key, lease and dead-letter
      stream below stay named after ``<stream>``, one for all partitions);
    * checkpoint bucket ``C`` (``options.checkpoint_bucket``, key ``<stream>.<encoded name>``):
      ``$JS.API.STREAM.INFO.KV_C``, ``$JS.API.DIRECT.GET.KV_C.$KV.C.<key>`` (load) and
      ``$KV.C.<key>`` (save) — this projection's key only;
    * with ``clustered`` (a ``node_id`` is given), the same three for the lease bucket
      (``options.lease_bucket_name()``, same key), and SUBSCRIBE to that key's subject
      ``$KV.<lease bucket>.<key>`` (a standby's watch: it learns of a release at once);
    * the dead-letter stream ``D`` (``options.dead_letter_stream`` or ``__DLQ_<stream>``):
      ``$JS.API.STREAM.INFO.D``, ``$JS.API.DIRECT.GET.D`` (``dead_letters()``) and the
      projection's own subject ``<prefix>.__dlq.<stream>.<encoded name>``;
    * with ``may_create``: ``$JS.API.STREAM.CREATE`` of ``D`` and of the buckets (otherwise an
      administrator runs the projection once, or creates them).

    Keys and dead letters of other projections and tenants stay out of reach even when the
    buckets are shared (Aether creates KV buckets with direct gets, whose API subject names
    the key).

    Raises:
        InvalidNameError: a name breaks the rules of :mod:`aether.names`.
    """
    opts = options or ProjectionOptions()
    stream = stream_name(stream_base, namespace)
    prefix = validate_subject_prefix(subject_prefix)
    key = checkpoint_key(stream, validate_projection_name(name))
    base = catch_up_permissions(stream_base, namespace, inbox_prefix=inbox_prefix, subject_prefix=subject_prefix,
                                partitions=partitions)
    dlq = opts.dead_letter_stream or dead_letter_stream_name(stream)
    publish = [*_allowed(base, "publish"), *(f"{JS_API}.STREAM.INFO.{name}" for name in _streams(stream, partitions)),
               *_kv_key(opts.checkpoint_bucket, key, may_create=may_create)]
    subscribe = _allowed(base, "subscribe")
    if clustered:
        publish += _kv_key(opts.lease_bucket_name(), key, may_create=may_create)
        subscribe.append(f"$KV.{opts.lease_bucket_name()}.{key}")
    publish += [f"{JS_API}.STREAM.INFO.{dlq}", f"{JS_API}.DIRECT.GET.{dlq}",
                f"{prefix}.__dlq.{stream}.{encode_token(name)}"]
    if may_create:
        publish.append(f"{JS_API}.STREAM.CREATE.{dlq}")
    return _make(publish, subscribe)


def dashboard_permissions(cluster: str, *, inbox_prefix: str, event_streams: Iterable[str] = (),
                          checkpoint_bucket: str = "aether-projections", lease_ttls: Iterable[int] = (10,),
                          subject_prefix: str = CLUSTER_SUBJECT_PREFIX) -> Permissions:
    """What ``aether dashboard`` (:class:`~aether.dashboard.Collector`) of ``cluster`` needs: reads only.

    Publish:

    * ``$JS.API.STREAM.INFO.KV_<cluster bucket>`` and ``$JS.API.DIRECT.GET.KV_<cluster bucket>``
      — the leader lease, the shard map and the heartbeats (as ``aether cluster status``);
    * ``<prefix>.cluster.<cluster>.node.*.status`` — each member's live status;
    * ``$JS.API.STREAM.LIST`` — the configuration and state of every stream (names, message and
      byte counts, leaders; no message content);
    * ``$JS.API.DIRECT.GET.KV_<checkpoint_bucket>`` and ``$JS.API.DIRECT.GET.KV_<lease bucket>``
      for each of ``lease_ttls`` — projection positions and holders;
    * ``$JS.API.STREAM.INFO.__DLQ_<stream>`` for each of ``event_streams`` (full stream names) —
      dead letters per projection. Streams not listed show no dead-letter count.

    Subscribe: ``$KV.<cluster bucket>.leader`` / ``.map`` / ``.node.*`` (change hints) and
    ``<inbox_prefix>.>``. No ``allow_responses``: the dashboard answers nothing.

    Raises:
        InvalidNameError: a bad cluster name, stream name, prefix or inbox prefix.
        InvalidInputError: a bad lease TTL or bucket name.
    """
    bucket, kv_stream, nodes = _cluster_subjects(cluster, subject_prefix)
    opts = ProjectionOptions(checkpoint_bucket=checkpoint_bucket)
    publish = [f"{JS_API}.STREAM.INFO.{kv_stream}", f"{JS_API}.DIRECT.GET.{kv_stream}", f"{nodes}.*.status",
               f"{JS_API}.STREAM.LIST", f"{JS_API}.DIRECT.GET.KV_{opts.checkpoint_bucket}"]
    for ttl in _ints(lease_ttls):
        publish.append(f"{JS_API}.DIRECT.GET.KV_{ProjectionOptions(lease_ttl=ttl).lease_bucket_name()}")
    for stream in _strings(event_streams):
        if not isinstance(stream, str) or not _STREAM_NAME.fullmatch(stream):
            raise InvalidNameError(f"stream name {stream!r} may only contain A-Z a-z 0-9 _ -")
        publish.append(f"{JS_API}.STREAM.INFO.{dead_letter_stream_name(stream)}")
    subscribe = [f"$KV.{bucket}.leader", f"$KV.{bucket}.map", f"$KV.{bucket}.node.*", f"{_inbox(inbox_prefix)}.>"]
    return _make(publish, subscribe)


def _ints(values: Iterable[int]) -> list[int]:
    found = list(values)
    for value in found:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"lease TTLs are whole seconds >= 1, got {value!r}")
    return found


def merge(*permissions: Permissions) -> Permissions:
    """One user's permissions for several components (allow lists joined, duplicates dropped).

    Only lists made by this module can be merged (allow lists; an empty one is "deny all").
    """
    return _make((s for p in permissions for s in _allowed(p, "publish")),
                 (s for p in permissions for s in _allowed(p, "subscribe")),
                 allow_responses=any(p.get("allow_responses", False) for p in permissions))


def authorization_config(users: Sequence[Mapping[str, Any]]) -> str:
    """A nats-server ``authorization { users = [...] }`` block for ``users``.

    Each user is a mapping such as ``{"user": "alice", "password": "...", "permissions":
    store_permissions(...)}`` (``nkey`` instead of ``user``/``password`` works too). The
    server's configuration format accepts JSON values, so the lists are written as JSON.
    """
    return f"authorization {{ users = {json.dumps([dict(u) for u in users], indent=2)} }}"
