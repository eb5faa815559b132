"""ShardManager: stable shard_for, balanced sticky placement, minimal moves, capped two-phase handoffs."""

from __future__ import annotations

import msgspec
import pytest

from aether.cluster import NodeInfo, ShardManager, ShardMap, stable_hash
from aether.errors import InvalidInputError, InvalidNameError


def info(node_id: str, incarnation: str = "i1", applied: int = 0, status: str = "up") -> NodeInfo:
    return NodeInfo(id=node_id, incarnation=incarnation, applied_map=applied, status=status)  # type: ignore[arg-type]


def live(*nodes: NodeInfo) -> dict[str, NodeInfo]:
    return {n.id: n for n in nodes}


def settle(sm: ShardManager, current: ShardMap | None, members: dict[str, NodeInfo],
           max_rounds: int = 100) -> tuple[ShardMap, list[ShardMap]]:
    """Run rounds until stable, every node acknowledging each map at once; return final map and history."""
    history: list[ShardMap] = []
    for _ in range(max_rounds):
        nxt = sm.next_map(current, members, term=1)
        if nxt is None:
            assert current is not None
            return current, history
        history.append(nxt)
        current = nxt
        members = {k: msgspec.structs.replace(v, applied_map=nxt.version) for k, v in members.items()}
    raise AssertionError("placement did not settle")


def test_shard_for_is_stable_and_in_range() -> None:
    sm = ShardManager(64)
    for actor in ["a", "user@example.com", "über", "*", "a.b"]:
        shard = sm.shard_for(actor)
        assert 0 <= shard < 64
        assert shard == stable_hash(actor) % 64 == ShardManager(64).shard_for(actor)
    with pytest.raises(InvalidNameError):
        sm.shard_for("")
    with pytest.raises(InvalidInputError):
        ShardManager(0)


def test_first_map_places_every_shard_on_its_ring_target() -> None:
    sm = ShardManager(64)
    members = live(info("a"), info("b"), info("c"))
    first = sm.next_map(None, members, term=7)
    assert first is not None and first.version == 1 and first.term == 7
    assert list(first.owners) == sm.placement({"a": 1, "b": 1, "c": 1})
    assert set(first.owners) == {"a", "b", "c"} and not first.handoffs
    assert first.members == {"a": "i1", "b": "i1", "c": "i1"}
    assert sm.next_map(first, members, term=7) is None  # nothing changed: no new map


def test_failed_node_shards_move_at_once_and_only_them() -> None:
    sm = ShardManager(64, max_moves_per_round=2)
    first = sm.next_map(None, live(info("a"), info("b"), info("c")), term=1)
    assert first is not None
    second = sm.next_map(first, live(info("a"), info("b")), term=1)  # c failed
    assert second is not None and not second.handoffs
    for old, new in zip(first.owners, second.owners, strict=True):
        if old != "c":
            assert new == old, "shards of live nodes never move when another node fails"
        else:
            assert new in ("a", "b")
    assert "c" not in second.members
    # more than the cap moved in one round: orphans are not capped (availability first)
    assert first.owners.count("c") > 2


def test_restarted_incarnation_owns_nothing_until_reassigned() -> None:
    sm = ShardManager(32)
    first = sm.next_map(None, live(info("a"), info("b")), term=1)
    assert first is not None
    assert first.shards_of("b", "i1") and not first.shards_of("b", "i2")
    second = sm.next_map(first, live(info("a"), info("b", incarnation="i2")), term=1)
    assert second is not None and second.members["b"] == "i2" and not second.handoffs
    assert second.shards_of("b", "i2") == first.shards_of("b", "i1")


def test_join_moves_shards_in_capped_two_phase_handoffs() -> None:
    sm = ShardManager(64, max_moves_per_round=3)
    first = sm.next_map(None, live(info("a"), info("b")), term=1)
    assert first is not None
    members = live(info("a", applied=1), info("b", applied=1), info("c"))
    final, history = settle(sm, first, members)
    assert not final.handoffs
    caps = sm.capacities({"a": 1, "b": 1, "c": 1})
    counts = {node: final.owners.count(node) for node in "abc"}
    assert all(counts[node] <= caps[node] for node in "abc") and sum(counts.values()) == 64, counts
    assert max(counts.values()) - min(counts.values()) <= 2, f"balanced: {counts}"
    moved = {s for s in range(64) if first.owners[s] != final.owners[s]}
    assert moved and all(final.owners[s] == "c" for s in moved), "only shards going to the new node move"
    assert len(moved) == counts["c"]
    previous = first
    for shard_map in history:
        assert len(shard_map.handoffs) <= 3, "at most max_moves_per_round shards in handoff at once"
        for s, owner in enumerate(shard_map.owners):
            if owner != previous.owners[s]:
                # a live owner loses a shard only after its handoff was acknowledged
                assert s in previous.handoffs and previous.owners[s] in ("a", "b")
                assert owner == "c"
        previous = shard_map


def test_handoff_waits_for_acknowledgement() -> None:
    sm = ShardManager(16, max_moves_per_round=16)
    first = sm.next_map(None, live(info("a")), term=1)
    assert first is not None
    joined = live(info("a", applied=1), info("b"))
    second = sm.next_map(first, joined, term=1)
    assert second is not None and second.handoffs
    assert all(second.owners[s] == "a" and second.owner(s) is None for s in second.handoffs)
    assert sm.next_map(second, joined, term=1) is None, "no ack from a yet: nothing changes"
    acked = live(info("a", applied=second.version), info("b"))
    third = sm.next_map(second, acked, term=1)
    assert third is not None and not third.handoffs
    assert all(third.owners[s] == "b" for s in second.handoffs)


def test_handoff_from_a_node_that_dies_completes_at_once() -> None:
    sm = ShardManager(16, max_moves_per_round=16)
    first = sm.next_map(None, live(info("a")), term=1)
    assert first is not None
    second = sm.next_map(first, live(info("a", applied=1), info("b")), term=1)
    assert second is not None and second.handoffs
    third = sm.next_map(second, live(info("b")), term=1)  # a died mid-handoff
    assert third is not None and not third.handoffs and set(third.owners) == {"b"}


def test_leaving_node_gets_no_shards() -> None:
    sm = ShardManager(16)
    members = live(info("a"), info("b", status="leaving"))
    first = sm.next_map(None, members, term=1)
    assert first is not None and set(first.owners) == {"a"}


def test_apply_keeps_the_newest_map_only() -> None:
    sm = ShardManager(8)
    m1 = ShardMap(version=1, term=1, shard_count=8, owners=("a",) * 8, members={"a": "i"})
    m2 = msgspec.structs.replace(m1, version=2, owners=("b",) * 8, members={"b": "i"})
    assert sm.apply(m2) and not sm.apply(m1)
    assert sm.owner_of("x") == "b" and sm.shards_of("b") == frozenset(range(8))
    with pytest.raises(InvalidInputError):
        sm.apply(ShardMap(version=3, term=1, shard_count=4, owners=("a",) * 4))
    assert ShardManager.moves_between(m1, m2) == 8


def test_placement_is_balanced_for_any_node_names_and_weights() -> None:
    sm = ShardManager(64)
    for names in (["node-1", "node-2", "node-3"], ["a", "b", "c"], [f"n{i}" for i in range(5)]):
        targets = sm.placement(dict.fromkeys(names, 1))
        counts = [targets.count(name) for name in names]
        assert sum(counts) == 64 and max(counts) - min(counts) <= 2, (names, counts)
    weighted = sm.placement({"big": 3, "small": 1})
    assert weighted.count("big") == 48 and weighted.count("small") == 16


def test_failure_keeps_balance_and_moves_only_the_orphans() -> None:
    sm = ShardManager(64)
    members = live(info("a"), info("b"), info("c"), info("d"))
    first = sm.next_map(None, members, term=1)
    assert first is not None
    second = sm.next_map(first, live(info("a"), info("b"), info("c")), term=1)  # d failed
    assert second is not None and not second.handoffs
    counts = [second.owners.count(node) for node in "abc"]
    assert max(counts) - min(counts) <= 2, counts
    assert all(new == old for old, new in zip(first.owners, second.owners, strict=True) if old != "d")
