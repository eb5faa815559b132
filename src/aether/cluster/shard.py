"""ShardManager: actors → shards (stable hash), shards → nodes (ring placement, versioned map).

* ``shard_for(actor_id)`` = 64-bit BLAKE2b of the id modulo ``shard_count``: the same in every
  process, so any node (or client) finds an actor's shard without asking anyone.
* Placement is **balanced and sticky**: every node gets its quota — its weighted share
  ``shard_count * weight / total weight`` rounded down or up (equal weights: ``floor(S/N)`` or
  ``ceil(S/N)``), the rounded-up ones being the nodes that already hold the most. Nodes keep
  their shards up to their quota; only the surplus and the unowned shards move, each to its ring
  node (``ring.get_node("shard-<n>")``) when that node is short, else to the next short node.
  So a failed node's shards are the only ones that move, a joining node receives shards only
  from nodes above their new quota, and the load is as even as integers allow, for any number
  of nodes (a plain ring leaves nodes 20-30% above or below their share at 64 shards).
* :meth:`ShardManager.next_map` turns the current map and the live members into the next map:

  - a shard whose owner is gone (failed, left, or restarted as a new incarnation) is given to
    its ring target at once — its old owner has provably stopped (see ``discovery.py``);
  - a shard whose live owner is no longer its target starts a *handoff*: the owner keeps it
    but stops serving it, finishes in-flight work, and acknowledges by publishing
    ``applied_map >= since``; only the next map gives the shard to the target;
  - at most ``max_moves_per_round`` handoffs run at once (joins move shards gradually,
    never all at once).

It is pure logic (no I/O): :class:`~aether.cluster.ClusterManager` publishes the maps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aether.cluster.hashring import DEFAULT_VIRTUAL_NODES, ConsistentHashRing, stable_hash
from aether.cluster.types import Handoff, NodeInfo, ShardMap
from aether.errors import InvalidInputError
from aether.names import validate_actor_id

__all__ = ["DEFAULT_SHARD_COUNT", "ShardManager"]

DEFAULT_SHARD_COUNT = 64


class ShardManager:
    """Shard placement and the versioned shard map.

    Args:
        shard_count: number of shards (fixed for the life of a cluster; 1..65536).
        virtual_nodes: ring points per unit of node weight.
        max_moves_per_round: how many shards may be in handoff at once.

    Raises:
        InvalidInputError: a value out of range.
    """

    def __init__(self, shard_count: int = DEFAULT_SHARD_COUNT, *, virtual_nodes: int = DEFAULT_VIRTUAL_NODES,
                 max_moves_per_round: int = 8) -> None:
        if not isinstance(shard_count, int) or not 1 <= shard_count <= 65536:
            raise InvalidInputError(f"shard_count must be an int in 1..65536, got {shard_count!r}")
        if not isinstance(max_moves_per_round, int) or max_moves_per_round < 1:
            raise InvalidInputError(f"max_moves_per_round must be an int >= 1, got {max_moves_per_round!r}")
        self.shard_count = shard_count
        self.max_moves_per_round = max_moves_per_round
        self._ring = ConsistentHashRing(virtual_nodes)
        self._ring_keys = [f"shard-{s}".encode() for s in range(shard_count)]
        self._nodes: dict[str, int] = {}
        self._primary: list[str] = []
        self._map: ShardMap | None = None
        self._last_moves = 0

    # ---- actors → shards ------------------------------------------------------------------------
    def shard_for(self, actor_id: str) -> int:
        """The shard of ``actor_id`` (stable across processes and machines).

        Raises:
            InvalidNameError: ``actor_id`` is not a valid actor id.
        """
        return stable_hash(validate_actor_id(actor_id)) % self.shard_count

    # ---- the current map ---------------------------------------------------------------------------
    @property
    def shard_map(self) -> ShardMap | None:
        """The newest map applied (``None`` before the first)."""
        return self._map

    @property
    def version(self) -> int:
        """The version of the current map (0 before the first)."""
        return self._map.version if self._map is not None else 0

    def apply(self, shard_map: ShardMap) -> bool:
        """Adopt ``shard_map`` if it is newer than the current one; return whether it was.

        Raises:
            InvalidInputError: the map is for a different shard count.
        """
        if shard_map.shard_count != self.shard_count or len(shard_map.owners) != self.shard_count:
            raise InvalidInputError(f"shard map has {shard_map.shard_count} shards; this cluster uses "
                                    f"{self.shard_count}")
        if self._map is not None and shard_map.version <= self._map.version:
            return False
        self._map = shard_map
        return True

    def owner_of_shard(self, shard: int) -> str | None:
        """The node serving ``shard`` under the current map (``None``: unassigned or moving)."""
        return self._map.owner(shard) if self._map is not None else None

    def owner_of(self, actor_id: str) -> str | None:
        """The node serving ``actor_id`` under the current map."""
        return self.owner_of_shard(self.shard_for(actor_id))

    def shards_of(self, node_id: str) -> frozenset[int]:
        """Shards ``node_id`` serves under the current map."""
        return self._map.shards_of(node_id) if self._map is not None else frozenset()

    # ---- placement ---------------------------------------------------------------------------------
    def _primaries(self, nodes: Mapping[str, int]) -> list[str]:
        """Each shard's first ring node (``ring.get_node("shard-<n>")``), cached per node set."""
        if self._nodes.keys() != nodes.keys():
            self._nodes = dict.fromkeys(nodes, 1)
            # every node gets the same number of ring points: weights act through the quotas,
            # so a heavy node never costs thousands of ring points per placement
            self._ring.set_nodes(self._nodes)
            get = self._ring.get_node
            self._primary = [get(key) or "" for key in self._ring_keys]
        return self._primary

    def quotas(self, nodes: Mapping[str, int], held: Mapping[str, int] | None = None) -> dict[str, int]:
        """How many shards each node should hold: ``floor`` or ``ceil`` of its share
        ``shard_count * weight / total weight``, summing to ``shard_count``.

        The ``shard_count - sum(floor)`` extra shards go to nodes whose share is fractional,
        those already holding the most above their floor first (``held``: shards each node holds
        now), so that as few shards as possible move, and no shard moves twice while the cluster
        converges round by round; ties are broken by the larger fractional part, then by a
        stable hash of the node id (the same in every process).

        Raises:
            InvalidInputError: a weight that is not a positive int.
        """
        for node, weight in nodes.items():
            if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
                raise InvalidInputError(f"weight of {node!r} must be a positive int, got {weight!r}")
        total = sum(nodes.values())
        n = self.shard_count
        quota = {node: n * weight // total for node, weight in nodes.items()}
        extra = n - sum(quota.values())
        if extra:
            have = held or {}
            fractional = [node for node, weight in nodes.items() if (n * weight) % total]
            # by how many shards a node holds above its floor: a node that is given the extra
            # shard then never has to give it up in a later round as the others converge
            fractional.sort(key=lambda node: (quota[node] - have.get(node, 0), -((n * nodes[node]) % total),
                                              stable_hash(node)))
            for node in fractional[:extra]:
                quota[node] += 1
        return quota

    def capacities(self, nodes: Mapping[str, int]) -> dict[str, int]:
        """The most shards each node may hold: ``ceil(shard_count * weight / total weight)``."""
        total = sum(nodes.values())
        return {node: -(-self.shard_count * weight // total) for node, weight in nodes.items()}

    def placement(self, nodes: Mapping[str, int], owners: Sequence[str] | None = None) -> list[str]:
        """The target node per shard for ``{node_id: weight}`` (``""`` when no nodes).

        Balanced: every node gets exactly its :meth:`quotas` (its weighted share rounded down or
        up; with equal weights ``floor(S/N)`` or ``ceil(S/N)``). Sticky and minimal: given the
        current ``owners``, a node keeps its shards up to its quota (those whose ring node is it
        first), the extra shards of a fractional share go to the nodes holding the most, and
        only the surplus and the unowned shards move — each to its ring node if that node is
        still short, else to the next node short of its quota. Deterministic: the same inputs
        give the same placement in every process. Cost: O(shards + nodes · virtual nodes).

        Raises:
            InvalidInputError: a weight that is not a positive int.
        """
        n = self.shard_count
        if not nodes:
            return [""] * n
        primary = self._primaries(nodes)
        held: dict[str, list[int]] = {}
        if owners is not None:
            for shard, owner in enumerate(owners):
                if owner in nodes:
                    held.setdefault(owner, []).append(shard)
        quota = self.quotas(nodes, {node: len(shards) for node, shards in held.items()})
        targets = [""] * n
        short = dict(quota)
        for owner, shards in held.items():
            keep = quota[owner]
            if len(shards) > keep:
                shards.sort(key=lambda shard, owner=owner: (primary[shard] != owner, shard))  # type: ignore[misc]
                del shards[keep:]
            for shard in shards:
                targets[shard] = owner
            short[owner] = keep - len(shards)
        pool = [shard for shard in range(n) if not targets[shard]]
        rest: list[int] = []
        for shard in pool:
            node = primary[shard]
            if short[node] > 0:
                targets[shard] = node
                short[node] -= 1
            else:
                rest.append(shard)
        if rest:
            needy = sorted((node for node, missing in short.items() if missing > 0), key=stable_hash)
            it = iter(rest)
            for node in needy:
                for _ in range(short[node]):
                    targets[next(it)] = node
                short[node] = 0
        return targets

    def next_map(self, current: ShardMap | None, live: Mapping[str, NodeInfo], term: int) -> ShardMap | None:
        """The map that should follow ``current`` given the ``live`` members; ``None`` if unchanged.

        ``live`` maps node id → :class:`NodeInfo` of members that may own shards (status ``up``).
        Members that are leaving keep the shards they own until they release them, but get none.
        Versions keep increasing even without a ``current`` map: the first map is numbered above
        every ``applied_map`` the members report.
        """
        n = self.shard_count
        owners = list(current.owners) if current is not None else [""] * n
        handoffs = dict(current.handoffs) if current is not None else {}
        known = current.members if current is not None else {}
        floor = max((info.applied_map for info in live.values()), default=0)
        version = max(current.version if current is not None else 0, floor) + 1

        def alive(node: str) -> bool:
            info = live.get(node)
            return info is not None and known.get(node) == info.incarnation

        # where each shard is, or is already going: a shard in handoff counts for its target
        effective = [
            (handoffs[s].target if s in handoffs else owner) if owner and alive(owner) else ""
            for s, owner in enumerate(owners)
        ]
        up = {nid: max(1, info.weight) for nid, info in live.items() if info.status == "up"}
        targets = self.placement(up, effective if current is not None else None)

        moved = 0
        candidates: list[int] = []
        for s in range(n):
            owner = owners[s]
            target = targets[s]
            handoff = handoffs.get(s)
            if handoff is not None:
                if not alive(owner):
                    owners[s] = target
                    del handoffs[s]
                    moved += 1
                elif live[owner].applied_map >= handoff.since:
                    owners[s] = target  # released: the target acquires (or the owner again, if it is the target)
                    del handoffs[s]
                elif target == owner:
                    pass  # the owner is its target again: let the release finish, then it gets it back
                elif target and handoff.target != target:
                    handoffs[s] = Handoff(target, handoff.since)
                continue
            if not owner or not alive(owner):
                if owner != target:
                    owners[s] = target
                    if owner:
                        moved += 1
            elif target and owner != target:
                candidates.append(s)
        budget = self.max_moves_per_round - len(handoffs)
        for s in candidates[:max(0, budget)]:
            handoffs[s] = Handoff(targets[s], version)
            moved += 1
        members = {nid: info.incarnation for nid, info in live.items()}
        owners_t = tuple(owners)
        if current is not None and owners_t == current.owners and handoffs == current.handoffs \
                and members == current.members:
            return None
        self._last_moves = moved
        return ShardMap(version=version, term=term, shard_count=n, owners=owners_t, members=members,
                        handoffs=handoffs)

    @property
    def last_moves(self) -> int:
        """Shards moved (reassigned or put in handoff) by the last map :meth:`next_map` returned."""
        return self._last_moves

    @staticmethod
    def moves_between(old: ShardMap | None, new: ShardMap) -> int:
        """Shards whose owner changed from a node to another, or that entered a handoff."""
        if old is None:
            return 0
        changed = sum(1 for a, b in zip(old.owners, new.owners, strict=True) if a and a != b)
        return changed + sum(1 for s in new.handoffs if s not in old.handoffs)
