"""Helpers for dashboard tests: ``aether node`` and ``aether dashboard`` as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["AetherProc", "fetch_json", "start_dashboard", "start_node"]


class AetherProc:
    """A long-running ``python -m aether …`` whose stderr goes to a file."""

    def __init__(self, args: list[str], work_dir: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.log = work_dir / f"{name}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "aether", *args], stdout=subprocess.PIPE,
                                         stderr=log, stdin=subprocess.DEVNULL, text=True,
                                         env={**os.environ, **(env or {})}, start_new_session=True)

    def line(self, timeout: float = 60.0) -> str:
        """The next line of stdout."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line:
                return line.strip()
            if self.proc.poll() is not None:
                raise AssertionError(f"process ended with {self.proc.returncode}: {self.log_tail()}")
        raise AssertionError(f"no output in {timeout}s: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no goodbye."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def close(self) -> None:
        self.kill()
        if self.proc.stdout is not None:
            with contextlib.suppress(Exception):
                self.proc.stdout.close()


def start_node(node_id: str, nats_url: str, cluster: str, stream: str, work_dir: Path,
               *extra: str) -> tuple[AetherProc, dict[str, Any]]:
    """An ``aether node`` hosting the demo's bank accounts; returns it and its ready line."""
    proc = AetherProc(["node", "--node-id", node_id, "--nats-url", nats_url, "--cluster", cluster, "--stream", stream,
                       "--json", *extra], work_dir, node_id)
    ready: dict[str, Any] = json.loads(proc.line())
    return proc, ready


def start_dashboard(nats_url: str, cluster: str, work_dir: Path, *extra: str,
                    env: dict[str, str] | None = None) -> tuple[AetherProc, str]:
    """An ``aether dashboard`` on a free port; returns it and its URL."""
    proc = AetherProc(["dashboard", "--nats-url", nats_url, "--cluster", cluster, "--port", "0", "--interval", "0.5",
                       *extra], work_dir, "dashboard", env=env)
    line = proc.line()
    assert line.startswith("aether dashboard of cluster"), line
    return proc, line.rsplit(" ", 1)[1]


def fetch_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())
