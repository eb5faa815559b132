"""The command line's rough edges, as a new user meets them: a refused connection and a bad URL
said at once, a busy port, a wrong ``$AETHER_NATS_SERVER``, an unknown ``--set`` key, a node's
ready line, brackets kept in output, and Ctrl-C at any moment of every command (exit 130, no
traceback, nothing left behind). Everything runs the real ``aether`` console script."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import psutil
import pytest

from aether.errors import InvalidInputError, NatsConnectionError, NatsServerError
from aether.event import Event
from aether.store import JetStreamEventStore
from aether.testing import NatsCluster, NatsServer
from aether.testing.server import find_nats_server

pytestmark = pytest.mark.anyio

AETHER = str(Path(sys.executable).with_name("aether"))  # the console script of this interpreter's venv


def aether(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AETHER, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code and len(lines) == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- connection ----------------------------------------------------------------------------------
def test_connection_refused_is_said_at_once_with_a_hint() -> None:
    # With a 120 s connect timeout, only an immediate answer finishes within the 60 s run limit.
    result = aether("events", "show", "acct", "-s", f"nats://127.0.0.1:{closed_port()}", "--connect-timeout", "120")
    line = one_error_line(result, 1)
    assert "connection refused" in line and "aether server" in line, line


@pytest.mark.parametrize("url", ["localhost", "http://127.0.0.1:4222", "nats://", "nats://127.0.0.1:port",
                                 "nats://127.0.0.1:70000"])
def test_a_bad_url_is_refused_at_once(url: str) -> None:
    result = aether("cluster", "status", "-s", url, "--connect-timeout", "120")
    assert "invalid NATS URL" in one_error_line(result, 2)


async def test_library_connect_refused_at_once_when_asked_and_bad_urls() -> None:
    from aether.connect import connect

    url = f"nats://127.0.0.1:{closed_port()}"
    with pytest.raises(NatsConnectionError, match="connection refused"):
        async with asyncio.timeout(30):  # far below connect_timeout: only an immediate answer fits
            await connect([url, url.replace("nats://", "tls://")], retry_refused=False, connect_timeout=120)
    with pytest.raises(InvalidInputError, match="invalid NATS URL 'https://x:1'"):
        await connect("https://x:1")


def test_urls_that_are_fine() -> None:
    from aether.connect import check_url

    for url in ("nats://127.0.0.1:4222", "tls://demo.example:4443", "ws://h:8080", "wss://h", "nats://u:p@h:1",
                "127.0.0.1:4222", "nats://[::1]:4222"):
        check_url(url)


# ---- aether server -------------------------------------------------------------------------------
def test_server_on_a_busy_port_and_the_same_race_in_natsserver(nats_server: NatsServer, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    result = aether("server", "--port", str(nats_server.port))
    assert one_error_line(result, 1) == f"aether: error: port {nats_server.port} is in use; try --port 0"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(NatsServerError, match=f"port {nats_server.port} is in use"), NatsServer(port=nats_server.port):
        pass
    assert list(tmp_path.iterdir()) == []  # the failed start removed its temporary folder


def test_nats_server_env_pointing_nowhere_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = str(tmp_path / "no-such-nats-server")
    line = one_error_line(aether("server", "--port", "0", env={"AETHER_NATS_SERVER": missing}), 1)
    assert "$AETHER_NATS_SERVER" in line and missing in line, line
    monkeypatch.setenv("AETHER_NATS_SERVER", missing)
    with pytest.raises(NatsServerError, match="does not exist"):
        find_nats_server()
    not_executable = tmp_path / "nats-server"
    not_executable.write_text("")
    monkeypatch.setenv("AETHER_NATS_SERVER", str(not_executable))
    with pytest.raises(NatsServerError, match="not executable"):
        find_nats_server()


def test_natsserver_with_no_binary_leaves_no_temporary_folder(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    server = NatsServer(binary=str(tmp_path / "missing-binary"))
    assert list(tmp_path.iterdir()) == []  # the constructor does no I/O
    with pytest.raises(NatsServerError, match="does not exist"):
        server.start_sync()
    with pytest.raises(NatsServerError, match="does not exist"), NatsServer(binary=str(tmp_path / "missing")):
        pass
    with pytest.raises(NatsServerError, match="does not exist"), NatsCluster(3, binary=str(tmp_path / "missing")):
        pass
    assert list(tmp_path.iterdir()) == []


# ---- aether node ---------------------------------------------------------------------------------
def test_node_refuses_unknown_and_bad_settings(nats_url: str, unique_name: str) -> None:
    base = ["node", "-s", nats_url, "--cluster", unique_name, "--no-metrics"]
    line = one_error_line(aether(*base, "--set", "snapshot_evry=10"), 2)
    assert "unknown --set key(s) for this handler: snapshot_evry" in line and "snapshot_every" in line, line
    line = one_error_line(aether(*base, "--set", "cache_size=lots"), 2)
    assert "--set cache_size=lots: expected a whole number" in line, line


def _ready_line(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            info: dict[str, object] = json.loads(line)
            if info.get("event") == "ready":
                return info
    raise AssertionError(f"no ready line: exit {proc.wait()}")


def test_node_json_ready_only_once_it_serves_its_shards_on_a_reused_cluster(nats_url: str,
                                                                           unique_name: str) -> None:
    args = [AETHER, "node", "-s", nats_url, "--cluster", unique_name, "--no-metrics", "--json",
            "--shard-count", "8"]
    # The second node finds the map of the first (which names only "first"): it must not call
    # itself ready on that map.
    for node_id in ("first", "second"):
        with subprocess.Popen([*args, "--node-id", node_id], stdout=subprocess.PIPE, text=True) as node:
            try:
                assert _ready_line(node)["shards"] == 8, node_id
            finally:
                node.send_signal(signal.SIGTERM)
                assert node.wait(60) == 0


# ---- output --------------------------------------------------------------------------------------
async def test_brackets_in_names_and_data_are_printed_as_they_are(nats_url: str, unique_name: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        store = await JetStreamEventStore.create(nc, unique_name, storage="memory")
        await store.save_event(Event("Tagged[v2]", "acct[1]", 1, {"note": "[bold]x[/bold]"}))
        await store.aclose()
    finally:
        await nc.close()
    result = await asyncio.to_thread(aether, "events", "show", "acct[1]", "-s", nats_url, "--stream", unique_name)
    assert result.returncode == 0, result.stderr
    assert "'acct[1]'" in result.stdout and "Tagged[v2]" in result.stdout and "[bold]x[/bold]" in result.stdout


# ---- Ctrl-C --------------------------------------------------------------------------------------
# When to interrupt: in the middle of importing Aether (see _importing), then at fixed times:
# start-up, connecting or starting a server, running.
_PAUSES: tuple[float | None, ...] = (None, 0.45, 0.9, 1.8)


def _importing(proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Wait until the process is importing Aether: msgspec's extension module is mapped (the
    ``aether`` package imports it). The console script's own first lines (Python's start-up and
    the ``import re`` of the wrapper pip writes) run before any Aether code and are not ours."""
    deadline = time.monotonic() + timeout
    maps = Path(f"/proc/{proc.pid}/maps")
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if "msgspec" in maps.read_text():
                return
        time.sleep(0.002)
    raise AssertionError("the process never imported msgspec")


def _interrupt(args: list[str], pause: float | None, env: dict[str, str]) -> tuple[int | None, str]:
    """Start ``aether ARGS``, SIGINT it after ``pause`` s (``None``: while it imports Aether);
    (exit code or None if it ended first, stderr)."""
    proc = subprocess.Popen([AETHER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    if pause is None:
        _importing(proc)
    else:
        time.sleep(pause)
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"{args} did not stop after SIGINT at {pause}s: {err}") from None
    return (proc.returncode if alive else None), err


async def _seed(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    try:
        store = await JetStreamEventStore.create(nc, stream, storage="memory")
        await store.save_event(Event("Opened", "acct", 1))
        await store.aclose()
    finally:
        await nc.close()


def _leftovers(marker: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with_marker = marker in " ".join(proc.info.get("cmdline") or [])
        if with_marker and proc.pid != os.getpid():
            found.append(" ".join(proc.info["cmdline"]))
    return found


@pytest.mark.parametrize("command", ["server", "demo", "node", "dashboard", "events tail", "events show",
                                     "events stats", "cluster status"])
def test_ctrl_c_at_any_moment_exits_130_without_traceback(command: str, nats_url: str, unique_name: str,
                                                          tmp_path: Path) -> None:
    args = command.split()
    if command == "server":
        args += ["--port", "0"]
    elif command == "demo":
        args += ["--plain", "--accounts", "10", "--duration", "30"]
    elif command == "node":
        args += ["-s", nats_url, "--cluster", unique_name, "--no-metrics"]
    elif command == "dashboard":
        args += ["-s", nats_url, "--cluster", unique_name, "--port", "0"]
    else:
        asyncio.run(_seed(nats_url, unique_name))
        args += ["-s", nats_url, "--stream", unique_name] if command.startswith("events") else ["-s", nats_url]
        args += ["acct"] if command == "events show" else []
    env = {"TMPDIR": str(tmp_path)}  # the embedded servers' folders: checked below
    # the interrupt during the import always lands; a quick command (show, stats, status) may finish
    # before the later ones on an idle machine, a long-running one never does
    quick = command in ("events show", "events stats", "cluster status")
    interrupted = 0
    for pause in _PAUSES:
        code, err = _interrupt(args, pause, env)
        assert "Traceback" not in err and "Exception ignored" not in err and "never awaited" not in err, err
        if quick and pause is not None and code not in (None, 130) and "interrupted" not in err:
            # still running when polled, but its own result was already decided and said when the
            # signal came (e.g. `cluster status` exiting 1: no such cluster): it finished first
            code = None
        if code == -signal.SIGINT:
            # The signal came while the interpreter itself was finishing, after the command's
            # exit (Python restores the default handler then): killed by SIGINT, which the shell
            # shows as 130, and no traceback (asserted above).
            continue
        if code is not None:
            interrupted += 1
            assert code == 130, (pause, code, err)
            assert err.rstrip().endswith("interrupted"), err
        else:  # it finished first (a quick command): a normal ending, no traceback
            assert "interrupted" not in err
    assert interrupted >= (1 if quick else len(_PAUSES)), (command, interrupted)
    assert _leftovers(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []


def test_a_second_ctrl_c_cuts_a_stuck_graceful_stop_short(nats_url: str, unique_name: str, tmp_path: Path) -> None:
    (tmp_path / "stuck_close.py").write_text(
        "import asyncio\n"
        "from pathlib import Path\n\n"
        "def make(context):\n"
        "    async def never_done():\n"
        "        Path('closing').touch()\n"
        "        await asyncio.sleep(3600)\n\n"
        "    context.on_close(never_done)\n\n"
        "    async def handle(request):\n"
        "        return b''\n\n"
        "    return handle\n")
    with subprocess.Popen([AETHER, "node", "-s", nats_url, "--cluster", unique_name, "--no-metrics", "--json",
                           "--handler", "stuck_close:make"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=tmp_path) as node:
        try:
            assert _ready_line(node)["event"] == "ready"
            node.send_signal(signal.SIGINT)  # graceful: leaves the cluster, then hangs in the handler's close
            deadline = time.monotonic() + 60
            while not (tmp_path / "closing").exists():
                assert time.monotonic() < deadline and node.poll() is None
                time.sleep(0.05)
            node.send_signal(signal.SIGINT)  # the second Ctrl-C ends it
            _, err = node.communicate(timeout=60)
        finally:
            node.kill()
    assert node.returncode == 130 and "Traceback" not in err, err
