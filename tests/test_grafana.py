"""The Grafana dashboards under deploy/grafana/ only chart metrics Aether exports, with labels they have.

Every panel's PromQL is parsed (label matchers, ranges, groupings, strings and function calls
set aside); each remaining name must be a sample name that Aether's metrics registries expose
(collected from real StoreMetrics, BusMetrics, ClusterMetrics and ProjectionMetrics objects),
and each label matcher must name a label of that metric (or one Prometheus adds at scrape).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from aether import Event
from aether.bus import EventBus
from aether.metrics import BusMetrics, ClusterMetrics, ProjectionMetrics, StoreMetrics

pytestmark = pytest.mark.anyio

DASHBOARDS = Path(__file__).resolve().parent.parent / "deploy" / "grafana"
SCRAPE_LABELS = {"instance", "job"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
            "inf", "nan"}
_MATCHERS = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> tuple[set[str], dict[str, set[str]]]:
    """(metric names, metric -> label names in its matchers) of a PromQL expression."""
    labels: dict[str, set[str]] = {}
    for match in _MATCHERS.finditer(expr):
        if match.group(1):
            labels.setdefault(match.group(1), set()).update(_LABEL.findall(match.group(2)))
    text = _MATCHERS.sub(lambda m: f" {m.group(1) or ''} ", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", " ", text)
    names = {m.group(1) for m in _IDENT.finditer(text) if not m.group(2) and m.group(1).lower() not in KEYWORDS}
    return names, labels


def test_the_parser_finds_names_and_labels() -> None:
    names, labels = metric_names(
        'histogram_quantile(0.99, sum by (le, node) (rate(aether_x_bucket{cluster=~"$cluster", a!="b"}'
        '[$__rate_interval]))) / on (node) group_left sum(aether_y) > bool 1 and aether_z offset 5m')
    assert names == {"aether_x_bucket", "aether_y", "aether_z"}
    assert labels == {"aether_x_bucket": {"cluster", "a"}}
    assert metric_names("max by (p) (foo{p=~\"$p\"}) == 1")[0] == {"foo"}


async def exported() -> dict[str, set[str]]:
    """Every sample name Aether's metrics expose, with its label names."""
    registry = CollectorRegistry()
    store, cluster = StoreMetrics(registry), ClusterMetrics(registry)
    projection, bus_metrics = ProjectionMetrics(registry), BusMetrics(registry)
    store.on_append("ns", 1, 0.001)
    store.on_read("ns", 1, 0.001)
    store.on_conflict("ns")
    store.on_cache("ns", True)
    store.on_cache("ns", False)
    cluster.on_members("c", "n1", 1)
    cluster.on_leadership("c", "n1", True, 1)
    cluster.on_lease_renewal("c", "n1", 0.01, True)
    cluster.on_lease_renewal("c", "n1", 0.01, False)
    cluster.on_shards_owned("c", "n1", 64)
    cluster.on_shard_moves("c", "n1", 3)
    cluster.on_handoff("c", "n1", 3, 0.1)
    projection.on_progress("p", 1, 1, 0)
    projection.on_retry("p")
    projection.on_dead_letter("p", "handler")
    projection.on_active("p", True)
    bus = EventBus(metrics=bus_metrics)
    async with bus.subscribe("ns"):
        await bus.publish("ns", Event("E", "a", 1))
        found: dict[str, set[str]] = {}
        for family in registry.collect():
            for sample in family.samples:
                found.setdefault(sample.name, set()).update(sample.labels)
    return found


def dashboards() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in board["panels"]:
        found.extend(panels(panel) if panel.get("panels") else [panel])
    return [p for p in found if p.get("type") != "row"]


def test_there_is_one_dashboard_per_area() -> None:
    assert {p.stem for p in dashboards()} == {"aether-cluster", "aether-store", "aether-bus", "aether-projections"}


async def test_every_panel_charts_exported_metrics() -> None:
    known = await exported()
    assert "aether_store_appends_total" in known and "aether_bus_published_total" in known
    assert "aether_cluster_handoff_seconds_bucket" in known and "aether_projection_dead_letters_total" in known
    charted: set[str] = set()
    for path in dashboards():
        board = json.loads(path.read_text())
        assert board["uid"] == path.stem and board["title"].startswith("Aether / ")
        variables = {v["name"]: v for v in board["templating"]["list"]}
        for variable in variables.values():
            if variable["type"] == "query":
                names, _ = metric_names(variable["query"].removeprefix("label_values(").split(",")[0])
                assert names <= set(known), f"{path.name}: variable {variable['name']} uses {names - set(known)}"
        assert panels(board), path.name
        for panel in panels(board):
            assert panel["targets"], f"{path.name}: {panel['title']} has no query"
            for target in panel["targets"]:
                names, labels = metric_names(target["expr"])
                where = f"{path.name}: {panel['title']!r}: {target['expr']}"
                assert names, f"{where}: no metric"
                assert names <= set(known), f"{where}: not exported: {sorted(names - set(known))}"
                for name, used in labels.items():
                    allowed = known[name] | SCRAPE_LABELS
                    assert used <= allowed, f"{where}: {name} has no label {sorted(used - allowed)}"
                for variable in re.findall(r"\$([A-Za-z_]+)", target["expr"]):
                    assert variable.startswith("__") or variable in variables, f"{where}: unknown ${variable}"
                charted |= names
    # every metric family is on some dashboard
    families = {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in known if not n.endswith("_created")}
    uncharted = {f for f in families if not any(c == f or c.startswith(f + "_") for c in charted)}
    assert not uncharted, f"metrics on no dashboard: {sorted(uncharted)}"
