"""The demo's node processes: ``python -m aether node`` children, started, killed and restarted."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["NodeProcess"]


class NodeProcess:
    """One ``aether node`` child process.

    Args:
        node_id: the node id.
        args: the ``aether node`` arguments after ``--node-id``.
        work_dir: where its output and log go.
        env: extra environment (secrets).
    """

    def __init__(self, node_id: str, args: list[str], work_dir: Path, env: dict[str, str] | None = None) -> None:
        self.node_id = node_id
        self.args = args
        self.work_dir = work_dir
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.killed = False

    @property
    def log_file(self) -> Path:
        return self.work_dir / f"{self.node_id}.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start (or restart) the process."""
        if self.running:
            return
        self.starts += 1
        self.killed = False
        env = dict(os.environ)
        env.update(self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aether", "node", "--node-id", self.node_id, "--exit-with-parent", *self.args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL: no goodbye, no lease release, no flush."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
            self.killed = True

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a graceful leave), SIGKILL after ``timeout`` seconds."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @staticmethod
    def stop_all(nodes: list[NodeProcess], timeout: float = 10.0) -> None:
        """SIGTERM every node at once, then wait (SIGKILL stragglers)."""
        for node in nodes:
            if node.running:
                assert node.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in nodes:
            proc = node.proc
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
