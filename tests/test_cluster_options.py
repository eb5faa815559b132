"""Typed cluster options: the keyword fields match ClusterOptions, bad ones are InvalidInputError,
and each timing rule is one check shared by ClusterOptions, NodeDiscovery and LeaderElection."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from nats.aio.client import Client

from aether.cluster import ClusterManager, LeaderElection, NodeDiscovery, NodeInfo
from aether.cluster.options import ClusterOptionFields, ClusterOptions
from aether.errors import InvalidInputError

pytestmark = pytest.mark.anyio


def test_the_keyword_fields_are_exactly_the_option_fields() -> None:
    assert set(ClusterOptionFields.__annotations__) == {f.name for f in dataclasses.fields(ClusterOptions)}


async def test_keyword_options_are_applied(nc: Client) -> None:
    node = ClusterManager(nc, node_id="n1", shard_count=16, storage="memory")
    assert node.options == ClusterOptions(shard_count=16, storage="memory")


async def test_bad_option_keywords_are_invalid_input(nc: Client) -> None:
    bad: dict[str, Any] = {"shard_cuont": 16}
    with pytest.raises(InvalidInputError, match="shard_cuont"):
        ClusterManager(nc, node_id="n1", **bad)
    with pytest.raises(InvalidInputError, match="not both"):
        ClusterManager(nc, node_id="n1", options=ClusterOptions(), shard_count=16)


@pytest.mark.parametrize("fields", [
    {"heartbeat_interval": 0.0},
    {"failure_timeout": 0.5, "heartbeat_interval": 0.5},
    {"liveness_margin": -1.0},
    {"lease_ttl": 0.5, "renew_interval": 0.5},
    {"check_interval": 0.0},
    {"step_down_margin": -0.1},
])
async def test_each_timing_rule_holds_for_options_and_components(nc: Client, fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        ClusterOptions(**fields)
    membership = {k: v for k, v in fields.items() if k in ("heartbeat_interval", "failure_timeout", "liveness_margin")}
    lease = {k: v for k, v in fields.items()
             if k in ("lease_ttl", "renew_interval", "step_down_margin", "check_interval")}
    if membership:
        with pytest.raises(InvalidInputError):
            NodeDiscovery(nc, NodeInfo(id="n1"), **membership)
    if lease:
        with pytest.raises(InvalidInputError):
            LeaderElection(nc, node_id="n1", **lease)
