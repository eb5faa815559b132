"""Shared fixtures: the aether.testing plugin is loaded via pytest addopts.

With ``AETHER_FAULT_ARTIFACTS`` set (``scripts/fault_loop.py`` sets it), a failed test that
started NATS clusters leaves each server's log, store and a per-replica dump behind (see
``_fault_artifacts.py``); node logs from ``tmp_path`` are copied too.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from _fault_artifacts import artifacts_dir, collect_cluster
from aether.testing import NatsCluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_failed_key] = report.failed


_failed_key = pytest.StashKey[bool]()


@pytest.fixture
def nats_cluster_factory(nats_cluster_factory: Callable[..., NatsCluster],
                         request: pytest.FixtureRequest) -> Iterator[Callable[..., NatsCluster]]:
    """The plugin's factory; on failure (and with AETHER_FAULT_ARTIFACTS set) collects artefacts
    before the plugin's cleanup removes the clusters."""
    started: list[NatsCluster] = []

    def factory(*args: Any, **kwargs: Any) -> NatsCluster:
        cluster = nats_cluster_factory(*args, **kwargs)
        started.append(cluster)
        return cluster

    yield factory
    if not request.node.stash.get(_failed_key, False):
        return
    folder = artifacts_dir(request.node.nodeid)
    if folder is None:
        return
    for i, cluster in enumerate(started):
        collect_cluster(cluster, folder / f"cluster-{i}")
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is not None:
        shutil.copytree(tmp, folder / "tmp_path", dirs_exist_ok=True)
