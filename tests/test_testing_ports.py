"""The test launcher's cluster route ports never come from the kernel's ephemeral range, where the
servers' own client ports (``-p -1``) are picked later: no server can take another's route port."""

from __future__ import annotations

from aether.server import _ephemeral_range, _route_ports


def test_route_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    low, _ = _ephemeral_range()
    for _ in range(20):
        ports = _route_ports(5)
        assert len(set(ports)) == 5
        assert all(10_000 <= p < low for p in ports), ports
