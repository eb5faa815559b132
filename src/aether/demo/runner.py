"""``aether demo``: a 3-node cluster of bank accounts, a node killed and restarted, then a verdict.

Phases: start NATS (embedded, in a temporary folder, unless a URL is given) → start the node
processes → open the accounts → drive concurrent deposits and withdrawals → part-way SIGKILL
one node (by default the leader) and watch the failover → restart it and watch its shards come
back → stop → read every history and verify it (:mod:`aether.demo.verify`) → summary.
Every process and temporary file is cleaned up, also on Ctrl-C. The exit code is 0 only when
the verification passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rich.console import Console

from aether.cluster import ClusterClient
from aether.cluster.state import ClusterState, read_cluster_state
from aether.connect import ConnectOptions, close
from aether.demo.driver import Driver
from aether.demo.processes import NodeProcess
from aether.demo.verify import VerificationReport, load_histories, verify_histories
from aether.demo.view import DemoView
from aether.errors import AetherError, AetherTimeoutError
from aether.server import NatsServer
from aether.store import JetStreamEventStore

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["DemoConfig", "DemoResult", "run_demo"]


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Options of the demo.

    Attributes:
        accounts: number of bank accounts.
        duration: seconds of load after the accounts are opened.
        nodes: cluster node processes.
        concurrency: commands in flight at once.
        kill: which node to SIGKILL part-way (``"leader"``, ``"member"`` — a non-leader — or ``"none"``).
        kill_at / restart_at: when, as fractions of ``duration``.
        connect: where NATS is (``url`` ``None``: start an embedded server).
        stream: stream base name; each run uses its own namespace and cluster name.
        seed: workload seed.
        live: a live-updating view (``None``: when the console is a terminal).
        dashboard: serve the web dashboard (:mod:`aether.dashboard`) of the demo's cluster while
            it runs, on ``127.0.0.1:dashboard_port`` (0: a free port); its URL is printed.
    """

    accounts: int = 200
    duration: float = 25.0
    nodes: int = 3
    concurrency: int = 24
    kill: Literal["leader", "member", "none"] = "leader"
    kill_at: float = 0.3
    restart_at: float = 0.6
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    stream: str = "events"  # the command line's default stream name (``aether --stream``)
    seed: int | None = None
    live: bool | None = None
    dashboard: bool = False
    dashboard_port: int = 0


@dataclass
class DemoResult:
    """What happened: the verification report and the timings."""

    report: VerificationReport | None = None
    failover_seconds: float | None = None
    leader_change_seconds: float | None = None
    moved_back_seconds: float | None = None
    peak_rate: float = 0.0
    average_rate: float = 0.0
    elapsed: float = 0.0
    namespace: str = ""
    cluster: str = ""
    dashboard_url: str | None = None

    @property
    def ok(self) -> bool:
        return self.report is not None and self.report.ok


async def run_demo(config: DemoConfig, console: Console | None = None) -> DemoResult:
    """Run the demo (see the module docstring).

    Raises:
        AetherError: NATS could not be started or reached, or the cluster never formed.
    """
    console = console or Console()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    interrupted: list[int] = []

    def interrupt(sig: int) -> None:
        if not interrupted and task is not None:
            interrupted.append(sig)
            task.cancel()

    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, interrupt, sig)
            handled.append(sig)
    work = Path(tempfile.mkdtemp(prefix="aether-demo-"))
    server: NatsServer | None = None
    nodes: list[NodeProcess] = []
    nc: Client | None = None
    try:
        connect = config.connect
        if connect.url is None:
            console.print("starting an embedded NATS server (JetStream) …", style="dim")
            server = NatsServer(store_dir=work / "nats")
            await server.start()
            connect = dataclasses.replace(connect, url=server.url)
        nc = await connect.connect(name="aether-demo")
        return await _Demo(config, connect, nc, work, nodes, console).run()
    except asyncio.CancelledError:
        if interrupted:
            console.print("interrupted: stopping every process and removing temporary files …", style="yellow")
            raise KeyboardInterrupt from None
        raise
    finally:
        await asyncio.shield(asyncio.to_thread(_cleanup, nodes, server, work))
        if nc is not None:
            with contextlib.suppress(Exception):
                await close(nc)
        for sig in handled:
            loop.remove_signal_handler(sig)


def _cleanup(nodes: list[NodeProcess], server: NatsServer | None, work: Path) -> None:
    NodeProcess.stop_all(nodes, timeout=5.0)
    if server is not None:
        server.cleanup()
    shutil.rmtree(work, ignore_errors=True)


class _Demo:
    def __init__(self, config: DemoConfig, connect: ConnectOptions, nc: Client, work: Path,
                 nodes: list[NodeProcess], console: Console) -> None:
        self.config = config
        self.connect = connect
        self.nc = nc
        self.work = work
        self.nodes = nodes
        self.console = console
        run_id = secrets.token_hex(3)
        self.cluster = f"demo-{run_id}"
        self.namespace = f"demo-{run_id}"
        self.result = DemoResult(namespace=self.namespace, cluster=self.cluster)
        self.state: ClusterState | None = None
        self.started = time.monotonic()
        self.view = DemoView(console, config, self.cluster, live=config.live)

    def log(self, text: str) -> None:
        self.view.log(time.monotonic() - self.started, text)

    async def run(self) -> DemoResult:
        if not self.config.dashboard:
            return await self._run()
        from aether.dashboard import DashboardServer

        server = DashboardServer(self.nc, self.cluster, port=self.config.dashboard_port, interval=0.5)
        url = self.result.dashboard_url = await server.start()
        self.console.print(f"dashboard of cluster {self.cluster}: [bold]{url}[/] (open it in a browser)")
        try:
            return await self._run()
        finally:
            await server.aclose()

    async def _run(self) -> DemoResult:
        config = self.config
        args = ["--cluster", self.cluster, "--stream", config.stream, "--namespace", self.namespace,
                "--metrics-port", "0", "--json", *self.connect.as_args()]
        for i in range(1, config.nodes + 1):
            self.nodes.append(NodeProcess(f"node-{i}", args, self.work, env=self.connect.as_env()))
        for node in self.nodes:
            node.start()
        self.log(f"started {config.nodes} node processes (cluster {self.cluster})")
        async with ClusterClient(self.nc, cluster=self.cluster, request_timeout=3.0) as client:
            await self._wait_for_cluster(client)
            accounts = [f"acct-{i:04d}" for i in range(1, config.accounts + 1)]
            driver = Driver(client, accounts, concurrency=config.concurrency, seed=config.seed)
            self.view.driver = driver
            with self.view:
                watcher = asyncio.ensure_future(self._watch())
                try:
                    self.log(f"opening {config.accounts} accounts")
                    await driver.open_accounts()
                    self.log(f"driving deposits and withdrawals for {config.duration:g}s")
                    load_started = time.monotonic()
                    self.view.start_load(load_started)
                    chaos = asyncio.ensure_future(self._chaos(load_started))
                    try:
                        await driver.run(config.duration)
                    finally:
                        driver.stop()
                    await chaos
                    self.result.average_rate = driver.acked / max(0.001, time.monotonic() - load_started)
                    self.result.peak_rate = self.view.peak_rate
                finally:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
        self.log("stopping the nodes (graceful leave)")
        await asyncio.to_thread(NodeProcess.stop_all, self.nodes)
        self.log("verifying every account")
        store = await JetStreamEventStore.create(self.nc, config.stream, namespace=self.namespace)
        try:
            histories, rebuilt = await load_histories(store, driver.accounts)
        finally:
            await store.aclose()
        self.result.report = verify_histories(histories, driver.ledger.values(), rebuilt=rebuilt)
        self.result.elapsed = time.monotonic() - self.started
        self.view.summary(self.result, driver)
        return self.result

    async def _wait_for_cluster(self, client: ClusterClient, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if not node.running:
                    raise AetherError(f"node {node.node_id} exited during start-up: {node.log_tail()}")
            with contextlib.suppress(AetherError):
                state = await read_cluster_state(self.nc, self.cluster)
                if (len(state.shards_per_node) == len(self.nodes) and len(state.members) == len(self.nodes)
                        and state.balanced and client.shard_map is not None):
                    self.state = state
                    self.log(f"cluster formed: leader {state.leader_id} (term {state.term}), {_balance(state)}")
                    self.log("term = the leadership's number: every new leader gets a higher one, and a shard "
                             "map written under an older term is refused, so a deposed leader cannot act")
                    return
            if time.monotonic() > deadline:
                raise AetherTimeoutError(f"the cluster did not form within {timeout:g}s")
            await asyncio.sleep(0.2)

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(AetherError):
                self.state = await read_cluster_state(self.nc, self.cluster)
                self.view.update(self.state, self.nodes)
            await asyncio.sleep(0.25)

    async def _chaos(self, load_started: float) -> None:
        config = self.config
        if config.kill == "none" or config.nodes < 2:
            return
        await asyncio.sleep(max(0.0, load_started + config.duration * config.kill_at - time.monotonic()))
        state = self.state
        leader = state.leader_id if state is not None else None
        ids = [n.node_id for n in self.nodes]
        if config.kill == "leader" and leader in ids:
            victim = next(n for n in self.nodes if n.node_id == leader)
        else:
            victim = next((n for n in reversed(self.nodes) if n.node_id != leader), self.nodes[-1])
        role = "the leader" if victim.node_id == leader else "a member"
        owned = state.shards_per_node.get(victim.node_id, 0) if state is not None else 0
        old_term = state.term if state is not None else 0
        killed_at = time.monotonic()
        await asyncio.to_thread(victim.kill)
        self.log(f"SIGKILL {victim.node_id} ({role}, {owned} shards)")
        restart_at = load_started + config.duration * config.restart_at
        leader_seen = victim.node_id != leader
        while time.monotonic() < restart_at + 5.0:
            state = self.state
            if state is not None:
                if not leader_seen and state.leader_id not in (None, victim.node_id) and state.term > old_term:
                    leader_seen = True
                    self.result.leader_change_seconds = time.monotonic() - killed_at
                    self.log(f"{state.leader_id} elected leader (term {state.term}) after "
                             f"{self.result.leader_change_seconds:.1f}s")
                if (victim.node_id not in state.shards_per_node and not state.unassigned and not state.handoffs
                        and state.shard_map is not None):
                    self.result.failover_seconds = time.monotonic() - killed_at
                    self.log(f"failover done in {self.result.failover_seconds:.1f}s: every shard served again "
                             f"({_balance(state)})")
                    break
            await asyncio.sleep(0.05)
        else:
            self.log("failover did not complete before the restart")
        await asyncio.sleep(max(0.0, restart_at - time.monotonic()))
        restarted_at = time.monotonic()
        victim.start()
        self.log(f"restarted {victim.node_id}")
        deadline = max(load_started + config.duration, restarted_at) + 20.0
        while time.monotonic() < deadline:
            state = self.state
            if (state is not None and state.shards_per_node.get(victim.node_id, 0) > 0 and state.balanced):
                self.result.moved_back_seconds = time.monotonic() - restarted_at
                self.log(f"shards moved back in {self.result.moved_back_seconds:.1f}s ({_balance(state)})")
                return
            await asyncio.sleep(0.1)
        self.log(f"{victim.node_id} did not get shards back in time")


def _balance(state: ClusterState) -> str:
    """``min 4, max 5 shards per node (balanced): node-1 4, node-2 5, …``."""
    low, high = state.shard_spread()
    verdict = "balanced" if state.balanced else "not balanced yet"
    spread = ", ".join(f"{n} {c}" for n, c in sorted(state.shards_per_node.items()))
    return f"min {low}, max {high} shards per node ({verdict}): {spread}"
