"""Helpers for cluster tests that run nodes as separate OS processes (so they can be killed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client

from aether.cluster._routing import node_subject

__all__ = ["NodeProc", "NodeSet", "eventually", "status", "statuses"]

T = TypeVar("T")


class NodeProc:
    """One ``python -m aether.testing.node_process`` child process."""

    def __init__(self, node_id: str, nats_url: str, cluster: str, work_dir: Path, *, stream: str = "",
                 replicas: int = 1, opts: Sequence[str] = ()) -> None:
        self.node_id = node_id
        self.nats_url = nats_url
        self.cluster = cluster
        self.stream = stream
        self.replicas = replicas
        self.opts = list(opts)
        self.events_file = work_dir / f"{node_id}.jsonl"
        self.log_file = work_dir / f"{node_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "aether.testing.node_process", "--nats-url", self.nats_url,
               "--node-id", self.node_id, "--cluster", self.cluster, "--events-file", str(self.events_file),
               "--replicas", str(self.replicas)]
        if self.stream:
            cmd += ["--stream", self.stream]
        for opt in self.opts:
            cmd += ["--opt", opt]
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (no goodbye) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def terminate(self, timeout: float = 15.0) -> None:
        """SIGTERM (graceful stop), SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def events(self) -> list[dict[str, Any]]:
        if not self.events_file.exists():
            return []
        found = []
        for line in self.events_file.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                found.append(json.loads(line))
        return found

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


class NodeSet:
    """Several node processes of one cluster; every process is killed on exit."""

    def __init__(self, nats_url: str, cluster: str, work_dir: Path, *, stream: str = "", replicas: int = 1,
                 opts: Sequence[str] = (), urls_for: Callable[[int], str] | None = None) -> None:
        self.nats_url = nats_url
        self.cluster = cluster
        self.work_dir = work_dir
        self.stream = stream
        self.replicas = replicas
        self.opts = opts
        self.urls_for = urls_for
        self.nodes: dict[str, NodeProc] = {}

    def start(self, node_id: str, index: int = 0) -> NodeProc:
        url = self.urls_for(index) if self.urls_for is not None else self.nats_url
        node = NodeProc(node_id, url, self.cluster, self.work_dir, stream=self.stream, replicas=self.replicas,
                        opts=self.opts)
        node.start()
        self.nodes[node_id] = node
        return node

    def running(self) -> list[str]:
        return [n for n, p in self.nodes.items() if p.running]

    def __enter__(self) -> NodeSet:
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes.values():
            node.kill()

    def diagnostics(self) -> str:
        return "\n".join(f"--- {n} ---\n{p.log_tail()}" for n, p in self.nodes.items())


async def status(nc: Client, cluster: str, node_id: str, timeout: float = 0.5) -> dict[str, Any] | None:
    """The node's status, or ``None`` when it does not answer."""
    try:
        msg = await nc.request(node_subject("_aether", cluster, node_id, "status"), b"", timeout=timeout)
    except Exception:
        return None
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def statuses(nc: Client, cluster: str, node_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    found = await asyncio.gather(*(status(nc, cluster, n) for n in node_ids))
    return dict(zip(node_ids, found, strict=True))


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0, interval: float = 0.05,
                     what: str = "condition", diagnostics: Callable[[], str] | None = None) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    extra = f"\n{diagnostics()}" if diagnostics is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r}){extra}")
