"""The ``aether`` command line against real nats-server processes, error paths included."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from click.testing import CliRunner, Result

from aether.cli import cli
from aether.cluster import ClusterClient
from aether.demo.bank import BankCommand, decode_reply, encode_command
from aether.errors import AetherError
from aether.event import Event
from aether.store import JetStreamEventStore
from aether.testing import NatsServer, wait_for_sync

pytestmark = pytest.mark.anyio

PY = sys.executable


# ---- helpers ----------------------------------------------------------------------------------
def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def assert_one_line_error(result: Result | subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    if isinstance(result, Result):
        exit_code, stderr = result.exit_code, result.stderr
    else:
        exit_code, stderr = result.returncode, result.stderr
    assert exit_code == code, (exit_code, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def run_cli(*args: str, timeout: float = 60, env: dict[str, str] | None = None,
            cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([PY, "-m", "aether", *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=cwd)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())



class Proc:
    """A long-running ``aether`` subprocess whose stdout lines are collected."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.proc = subprocess.Popen([PY, "-m", "aether", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, **(env or {})}, cwd=cwd)
        self.lines: list[str] = []

    def json_line(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"process ended: {self.proc.wait()} {self.proc.stderr.read()}")  # type: ignore[union-attr]
            self.lines.append(line)
            if line.startswith("{"):
                parsed: dict[str, Any] = json.loads(line)
                return parsed
        raise AssertionError("no JSON line in time")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()
        for stream in (proc.proc.stdout, proc.proc.stderr):
            if stream is not None:
                stream.close()


async def seed_events(url: str, stream: str, namespace: str | None, actor: str, n: int,
                      first: int = 1) -> list[Event]:
    nc = await nats.connect(url)
    try:
        store = await JetStreamEventStore.create(nc, stream, namespace=namespace, storage="memory")
        events = [Event("Deposited", actor, v, {"amount": v}, {"user": "t"}) for v in range(first, first + n)]
        await store.save_events(events)
        await store.aclose()
        return events
    finally:
        await nc.close()


# ---- basics -----------------------------------------------------------------------------------
def test_help_and_version() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("server", "events", "cluster", "node", "demo"):
        assert command in result.stdout
    for args in (["events", "show", "--help"], ["events", "tail", "--help"], ["events", "stats", "--help"],
                 ["cluster", "status", "--help"], ["node", "--help"], ["demo", "--help"], ["server", "--help"]):
        assert invoke(*args).exit_code == 0, args
    version = run_cli("--version")
    assert version.returncode == 0 and "aether" in version.stdout
    bare = invoke()
    assert bare.exit_code == 0 and "Commands" in bare.stdout


def test_bad_arguments_print_one_line() -> None:
    assert_one_line_error(invoke("events", "show"), 2, "Missing argument", "aether events show")
    assert_one_line_error(invoke("events", "nope"), 2, "No such command")
    assert_one_line_error(invoke("server", "--sync", "sometimes"), 2, "sometimes")
    assert_one_line_error(invoke("server", "--cluster", "3", "--port", "4000"), 2, "--port")
    assert_one_line_error(invoke("node", "--handler", "no-colon"), 2, "module:attribute")
    assert_one_line_error(invoke("node", "--handler", "surely_missing_module:x"), 2, "cannot import")
    assert_one_line_error(invoke("node", "--handler", "aether.demo.bank:nothing_here"), 2, "no attribute")
    assert_one_line_error(invoke("events", "show", "a", "--user", "only-user", "--nats-url", "nats://127.0.0.1:1"),
                          2, "user and password")
    assert_one_line_error(invoke("events", "show", "a", "--tls-ca", "/no/such/ca.pem",
                                 "--nats-url", "nats://127.0.0.1:1"), 2, "TLS CA file not found")


def test_unreachable_server_is_one_line() -> None:
    result = run_cli("events", "stats", "--nats-url", "nats://127.0.0.1:1", "--connect-timeout", "1")
    assert_one_line_error(result, 1, "cannot connect to NATS", "127.0.0.1:1")
    result = run_cli("cluster", "status", "--connect-timeout", "1", env={"AETHER_NATS_URL": "nats://127.0.0.1:1"})
    assert_one_line_error(result, 1, "cannot connect to NATS")


def test_tls_against_a_plaintext_server_is_one_line(nats_server: NatsServer, tmp_path: Path) -> None:
    from aether.testing.security import make_tls_files

    ca = str(make_tls_files(tmp_path).ca)
    tls_url = f"tls://127.0.0.1:{nats_server.port}"
    for args in (["--nats-url", tls_url], ["--nats-url", nats_server.url, "--tls-ca", ca]):
        result = run_cli("events", "stats", *args, "--connect-timeout", "20")
        assert_one_line_error(result, 1, "does not offer TLS", "refusing a plaintext connection")


# ---- events -----------------------------------------------------------------------------------
async def test_events_show(nats_url: str, unique_name: str) -> None:
    events = await seed_events(nats_url, unique_name, "shop.eu", "user@example.com", 5)
    base = ["--nats-url", nats_url, "--stream", unique_name, "--namespace", "shop.eu"]
    result = await asyncio.to_thread(invoke, "events", "show", "user@example.com", "--json", *base)
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert [e["version"] for e in shown] == [1, 2, 3, 4, 5]
    assert shown[0]["id"] == events[0].id and shown[0]["data"] == {"amount": 1}
    assert shown[0]["metadata"] == {"user": "t"} and shown[0]["event_type"] == "Deposited"
    last = json.loads((await asyncio.to_thread(invoke, "events", "show", "user@example.com", "--json",
                                               "--last", "2", *base)).stdout)
    assert [e["version"] for e in last] == [4, 5]
    tail = json.loads((await asyncio.to_thread(invoke, "events", "show", "user@example.com", "--json",
                                               "--from-version", "4", *base)).stdout)
    assert [e["version"] for e in tail] == [4, 5]
    table = await asyncio.to_thread(invoke, "events", "show", "user@example.com", "--metadata", *base)
    assert table.exit_code == 0 and "Deposited" in table.stdout and events[4].id[:8] in table.stdout

    unknown = await asyncio.to_thread(invoke, "events", "show", "nobody", *base)
    assert_one_line_error(unknown, 1, "'nobody' has no events")
    missing = await asyncio.to_thread(invoke, "events", "show", "x", "--nats-url", nats_url, "--stream",
                                      unique_name, "--namespace", "other")
    assert_one_line_error(missing, 1, "does not exist")
    bad_ns = await asyncio.to_thread(invoke, "events", "show", "x", "--nats-url", nats_url, "--namespace", "a b")
    assert_one_line_error(bad_ns, 2, "namespace")


async def test_events_stats(nats_url: str, unique_name: str) -> None:
    await seed_events(nats_url, unique_name, None, "a", 3)
    await seed_events(nats_url, unique_name, None, "b", 2)
    await seed_events(nats_url, unique_name, "tenant-x", "c", 4)
    env = {"AETHER_NATS_URL": nats_url, "AETHER_STREAM": unique_name}
    single = await asyncio.to_thread(invoke, "events", "stats", "--json", env=env)
    assert single.exit_code == 0, single.stderr
    stats = json.loads(single.stdout)
    assert (stats["actors"], stats["events"], stats["namespace"], stats["stream"]) == (2, 5, None, unique_name)
    assert stats["max_events_per_actor"] == 3 and stats["storage"] == "memory"
    every = json.loads((await asyncio.to_thread(invoke, "events", "stats", "--all", "--json", env=env)).stdout)
    assert {(row["namespace"], row["events"]) for row in every} == {(None, 5), ("tenant-x", 4)}
    table = await asyncio.to_thread(invoke, "events", "stats", "--all", env=env)
    assert table.exit_code == 0 and "tenant-x" in table.stdout
    text = await asyncio.to_thread(invoke, "events", "stats", "--namespace", "tenant-x", env=env)
    assert text.exit_code == 0 and "actors" in text.stdout
    missing = await asyncio.to_thread(invoke, "events", "stats", "--stream", "never-created-stream", env=env)
    assert_one_line_error(missing, 1, "does not exist")
    both = await asyncio.to_thread(invoke, "events", "stats", "--all", "--namespace", "x", env=env)
    assert_one_line_error(both, 2, "--all")


async def test_events_tail(nats_url: str, unique_name: str, procs: list[Proc]) -> None:
    await seed_events(nats_url, unique_name, "t1", "acct-old", 2)
    base = ["--nats-url", nats_url, "--stream", unique_name]
    follow = Proc(["events", "tail", "acct-*", "--namespace", "t1", "--count", "3", "--json", "--timeout", "60",
                   *base])
    procs.append(follow)
    replay = Proc(["events", "tail", "--namespace", "t1", "--from-start", "--count", "2", "--json",
                   "--timeout", "60", *base])
    procs.append(replay)
    wildcard = Proc(["events", "tail", "--namespace", ">", "--count", "1", "--json", "--timeout", "60", *base])
    procs.append(wildcard)
    # wait until the followers are subscribed (they say so on stderr)
    for proc in (follow, wildcard):
        assert proc.proc.stderr is not None
        wait_for_sync(lambda proc=proc: "following" in proc.proc.stderr.readline(), timeout=30)  # type: ignore[misc]
    await seed_events(nats_url, unique_name, "t1", "other", 1)          # filtered out by the actor pattern
    await seed_events(nats_url, unique_name, "t1", "acct-new", 3)
    out, _ = await asyncio.to_thread(follow.proc.communicate, timeout=60)
    assert follow.proc.returncode == 0
    got = [json.loads(line) for line in out.splitlines()]
    assert [(e["actor_id"], e["version"], e["namespace"]) for e in got] == [("acct-new", 1, "t1"),
                                                                           ("acct-new", 2, "t1"),
                                                                           ("acct-new", 3, "t1")]
    out, _ = await asyncio.to_thread(replay.proc.communicate, timeout=60)
    assert [(e["actor_id"], e["version"]) for e in map(json.loads, out.splitlines())] == [("acct-old", 1),
                                                                                          ("acct-old", 2)]
    out, _ = await asyncio.to_thread(wildcard.proc.communicate, timeout=60)
    assert json.loads(out.splitlines()[0])["actor_id"] == "other"

    quiet = await asyncio.to_thread(run_cli, "events", "tail", "--namespace", "t1", "--timeout", "0.5", *base)
    assert quiet.returncode == 0 and "0 events" in quiet.stderr
    nothing = await asyncio.to_thread(run_cli, "events", "tail", "--namespace", "zzz.*", "--timeout", "1", *base)
    assert_one_line_error(nothing, 1, "no namespace")
    bad = await asyncio.to_thread(run_cli, "events", "tail", "--namespace", "t*", *base)
    assert_one_line_error(bad, 2, "t*")


# ---- auth ---------------------------------------------------------------------------------------
class Lines:
    """Collects a pipe's lines in a thread (so waiting on one stream never blocks on the other)."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait until the pipe is closed (the process ended) and every line is read."""
        self._thread.join(30)

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines)


def _said(proc: Proc, out: Lines | None, err: Lines) -> Callable[[], str]:
    """What a waiting test reports when a condition fails: the process's exit code and output."""
    return lambda: (f"exit code: {proc.proc.poll()}\nstderr: {''.join(err.lines)!r}\n"
                    f"stdout: {''.join(out.lines) if out is not None else '(not read)'!r}")


async def _append_when_ready(url: str, stream: str, events: list[Event], **store_args: Any) -> None:
    """Append (each actor's events as one batch) once the (restarted) server's JetStream answers."""
    deadline = time.monotonic() + 60
    while True:
        try:
            nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
            continue
        try:
            store = await JetStreamEventStore.create(nc, stream, **store_args)
            for actor in dict.fromkeys(e.actor_id for e in events):
                await store.save_events([e for e in events if e.actor_id == actor])
            return
        except AetherError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await nc.close()


@pytest.mark.parametrize("partitions", [1, 3])
async def test_events_tail_says_when_the_connection_is_lost_and_back(
        nats_server_factory: Callable[..., NatsServer], unique_name: str, procs: list[Proc], partitions: int) -> None:
    """The server dies under a running `events tail` (no --timeout): one line says the connection
    is lost, reminders follow while it stays lost, one line says it is back once a server runs on
    the same port again, and the events stored after that flow, each once (every partition stream
    of a partitioned namespace is resumed)."""
    server = nats_server_factory()
    store_args: dict[str, Any] = {"namespace": "t", "partitions": partitions}
    actors = [f"acc-{i}" for i in range(6)]
    await _append_when_ready(server.url, unique_name, [Event("E", a, 1, {"n": 1}) for a in actors], **store_args)
    tail = Proc(["events", "tail", "--json", "--stream", unique_name, "--namespace", "t", "--nats-url", server.url],
                env={"AETHER_RECONNECT_REMINDER": "1"})
    procs.append(tail)
    out, err = Lines(tail.proc.stdout), Lines(tail.proc.stderr)
    said = _said(tail, out, err)
    wait_for_sync(lambda: err.count("following"), timeout=60, diagnostics=said)
    await _append_when_ready(server.url, unique_name, [Event("E", a, 2, {"n": 2}) for a in actors], **store_args)
    wait_for_sync(lambda: len(out.lines) == len(actors), timeout=60, diagnostics=said)
    server.kill_sync()
    wait_for_sync(lambda: err.count("connection to NATS lost"), timeout=60, diagnostics=said)
    wait_for_sync(lambda: err.count("still reconnecting to NATS"), timeout=60, diagnostics=said)
    assert tail.proc.poll() is None  # no --timeout: it keeps trying
    server.start_sync()  # the same port and store
    wait_for_sync(lambda: err.count("connection to NATS is back"), timeout=60, diagnostics=said)
    await _append_when_ready(server.url, unique_name,
                             [Event("E", a, v, {"n": v}) for a in actors for v in (3, 4)], **store_args)
    wait_for_sync(lambda: len(out.lines) >= 3 * len(actors), timeout=60, diagnostics=said)
    assert tail.stop() == 0  # SIGTERM
    out.join()
    got = sorted((json.loads(line)["actor_id"], json.loads(line)["version"]) for line in out.lines)
    assert got == sorted((a, v) for a in actors for v in (2, 3, 4))  # each once, none skipped
    assert err.count("connection to NATS lost") == 1 and err.count("connection to NATS is back") == 1
    assert "Traceback" not in "".join(err.lines)


async def test_events_tail_timeout_ending_while_disconnected_exits_1(
        nats_server_factory: Callable[..., NatsServer], unique_name: str, procs: list[Proc]) -> None:
    server = nats_server_factory()
    await _append_when_ready(server.url, unique_name, [Event("E", "acc", 1)])
    tail = Proc(["events", "tail", "--stream", unique_name, "--nats-url", server.url, "--timeout", "8"])
    procs.append(tail)
    err = Lines(tail.proc.stderr)
    said = _said(tail, None, err)
    wait_for_sync(lambda: err.count("following"), timeout=60, diagnostics=said)
    server.kill_sync()
    assert tail.proc.wait(60) == 1
    wait_for_sync(lambda: err.count("--timeout ended while the connection to NATS was lost"), timeout=10,
                  diagnostics=said)
    assert err.count("connection to NATS lost") == 1


def _lose_and_restore(server: NatsServer, proc: Proc, err: Lines, who: str) -> None:
    """Kill the server under ``proc``, see ``who`` report the loss and a reminder while it keeps
    running, restart the server on the same port, see ``who`` report the connection back."""
    server.kill_sync()
    wait_for_sync(lambda: err.count(f"{who}: connection to NATS lost"), timeout=60)
    wait_for_sync(lambda: err.count(f"{who}: still reconnecting to NATS"), timeout=60)
    assert proc.proc.poll() is None
    server.start_sync()
    wait_for_sync(lambda: err.count(f"{who}: connection to NATS is back"), timeout=60)


async def test_node_says_when_the_connection_is_lost_and_back(
        nats_server_factory: Callable[..., NatsServer], unique_name: str, procs: list[Proc]) -> None:
    server = nats_server_factory()
    node = Proc(["node", "--node-id", "n1", "--cluster", unique_name[:40], "--stream", unique_name, "--json",
                 "--no-metrics", "--nats-url", server.url], env={"AETHER_RECONNECT_REMINDER": "1"})
    procs.append(node)
    out, err = Lines(node.proc.stdout), Lines(node.proc.stderr)
    wait_for_sync(lambda: any('"ready"' in line for line in out.lines), timeout=90)
    _lose_and_restore(server, node, err, "node n1")
    assert node.stop() == 0  # SIGTERM
    assert any('"stopped"' in line for line in out.lines)
    assert err.count("connection to NATS lost") == 1 and err.count("connection to NATS is back") == 1
    assert "Traceback" not in "".join(err.lines)


async def test_dashboard_says_when_the_connection_is_lost_and_back(
        nats_server_factory: Callable[..., NatsServer], procs: list[Proc]) -> None:
    server = nats_server_factory()
    dash = Proc(["dashboard", "--port", "0", "--no-scrape", "--nats-url", server.url],
                env={"AETHER_RECONNECT_REMINDER": "1"})
    procs.append(dash)
    out, err = Lines(dash.proc.stdout), Lines(dash.proc.stderr)
    wait_for_sync(lambda: any("aether dashboard of cluster" in line for line in out.lines), timeout=90)
    _lose_and_restore(server, dash, err, "dashboard")
    assert dash.stop() == 0  # SIGTERM
    assert err.count("connection to NATS lost") == 1 and err.count("connection to NATS is back") == 1


def test_credentials_are_used_and_refusals_are_one_line(nats_server_factory: Callable[..., NatsServer]) -> None:
    server = nats_server_factory(extra_config="authorization { user: alice, password: s3cret }")
    wrong = run_cli("events", "stats", "--nats-url", server.url, "--user", "alice", "--password", "nope")
    assert_one_line_error(wrong, 1, "refused the credentials")
    anonymous = run_cli("events", "stats", "--nats-url", server.url)
    assert_one_line_error(anonymous, 1, "refused the credentials")
    right = run_cli("events", "stats", "--nats-url", server.url, "--user", "alice",
                    env={"AETHER_NATS_PASSWORD": "s3cret"})
    assert_one_line_error(right, 1, "does not exist")  # connected: the stream just is not there


# ---- server -------------------------------------------------------------------------------------
async def test_server_runs_until_interrupted(tmp_path: Path, procs: list[Proc]) -> None:
    store_dir = tmp_path / "data"
    server = Proc(["server", "--port", "0", "--json", "--sync", "always", "--store-dir", str(store_dir)])
    procs.append(server)
    info = await asyncio.to_thread(server.json_line)
    assert info["sync_interval"] == "always" and info["url"].startswith("nats://127.0.0.1:")
    await seed_events(info["url"], "srv", None, "a", 2)
    assert await asyncio.to_thread(server.stop, signal.SIGINT) == 130  # Ctrl-C: graceful stop, then 130
    assert (store_dir / "jetstream").is_dir()  # kept: it was asked for


async def test_server_cluster(procs: list[Proc]) -> None:
    server = Proc(["server", "--cluster", "3", "--json"])
    procs.append(server)
    info = await asyncio.to_thread(server.json_line, 90.0)
    assert len(info["urls"]) == 3 and len(set(info["pids"])) == 3
    nc = await nats.connect(info["urls"][1])
    try:
        store = await JetStreamEventStore.create(nc, "r3", replicas=3, storage="memory")
        await store.save_event(Event("E", "a", 1))
        assert len(await store.get_events("a")) == 1
        await store.aclose()
    finally:
        await nc.close()
    assert await asyncio.to_thread(server.stop) == 0
    for pid in info["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_server_port_in_use(nats_server: NatsServer) -> None:
    result = run_cli("server", "--port", str(nats_server.port))
    assert_one_line_error(result, 1, f"aether: error: port {nats_server.port} is in use; try --port 0")


# ---- node and cluster status -------------------------------------------------------------------
HANDLER_MODULE = '''
from aether.cli.node import NodeContext
from aether.cluster import ActorRequest


def make(context: NodeContext):
    prefix = context.options.get("prefix", "")

    async def handle(request: ActorRequest) -> bytes:
        return f"{prefix}{context.node_id}:{request.actor_id}:".encode() + request.payload

    return handle
'''


async def test_nodes_cluster_status_and_metrics(nats_url: str, unique_name: str, tmp_path: Path,
                                                procs: list[Proc]) -> None:
    cluster_name = unique_name[:40]
    common = ["--nats-url", nats_url, "--cluster", cluster_name, "--stream", unique_name, "--json"]
    nodes = [Proc(["node", "--node-id", f"n{i}", *common]) for i in (1, 2)]
    procs.extend(nodes)
    ready = [await asyncio.to_thread(node.json_line) for node in nodes]
    assert {r["node_id"] for r in ready} == {"n1", "n2"}

    def status() -> dict[str, Any] | None:
        result = invoke("cluster", "status", "--cluster", cluster_name, "--json", "--nats-url", nats_url)
        assert result.exit_code == 0, result.stderr
        state: dict[str, Any] = json.loads(result.stdout)
        spread = state["shards_per_node"]
        done = set(spread) == {"n1", "n2"} and sum(spread.values()) == 64 and state["map"]["handoffs"] == 0
        return state if done else None

    state = await asyncio.to_thread(wait_for_sync, status, timeout=30.0, interval=0.3)
    assert state["leader"]["id"] in ("n1", "n2") and state["leader"]["term"] > 0
    assert [m["id"] for m in state["members"]] == ["n1", "n2"]
    assert all(m["reachable"] for m in state["members"])
    table = await asyncio.to_thread(invoke, "cluster", "status", "--cluster", cluster_name, "--nats-url", nats_url)
    assert table.exit_code == 0 and "leader" in table.stdout and "n2" in table.stdout
    assert state["balance"] == {"min_shards": 32, "max_shards": 32, "balanced": True}
    assert "shards per node: min 32, max 32, balanced" in table.stdout

    # the bank accounts are served; metrics are exposed
    nc = await nats.connect(nats_url)
    try:
        async with ClusterClient(nc, cluster=cluster_name) as client:
            await client.wait_ready()
            reply = decode_reply(await client.request("acct-1", encode_command(BankCommand(op="open",
                                                                                           command_id="c1"))))
            assert reply.ok and reply.outcome == "AccountOpened" and reply.version == 1
    finally:
        await nc.close()
    body = await asyncio.to_thread(fetch, ready[0]["metrics_url"])
    assert "aether_cluster_shards_owned" in body and "aether_store_appends_total" in body

    for node in nodes:
        assert await asyncio.to_thread(node.stop) == 0
    missing = await asyncio.to_thread(invoke, "cluster", "status", "--cluster", "no-such-cluster",
                                      "--nats-url", nats_url)
    assert_one_line_error(missing, 1, "does not exist")


async def test_node_with_user_handler(nats_url: str, unique_name: str, tmp_path: Path,
                                      procs: list[Proc]) -> None:
    (tmp_path / "my_handlers.py").write_text(HANDLER_MODULE)
    cluster_name = unique_name[:40]
    node = Proc(["node", "--node-id", "solo", "--handler", "my_handlers:make", "--set", "prefix=>", "--no-metrics",
                 "--nats-url", nats_url, "--cluster", cluster_name, "--json"], cwd=str(tmp_path))
    procs.append(node)
    ready = await asyncio.to_thread(node.json_line)
    assert ready["metrics_url"] is None
    nc = await nats.connect(nats_url)
    try:
        async with ClusterClient(nc, cluster=cluster_name) as client:
            await client.wait_ready()
            assert await client.request("a.b", b"hi", timeout=10) == b">solo:a.b:hi"
    finally:
        await nc.close()
    assert await asyncio.to_thread(node.stop, signal.SIGINT) == 130  # Ctrl-C: graceful leave, then 130
