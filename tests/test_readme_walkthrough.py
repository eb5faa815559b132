"""README "Your first service": the same commands, taken from the README itself, work.

The code blocks of that section are read from README.md: the Python files are written as they
are; the shell commands run as they are, with two substitutions a reader does not need: the
server is this session's test server (``$AETHER_NATS_URL``, the documented override, as port
4222 may be taken on a test machine) and ``<pid of n1>`` is n1's pid."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = str(Path(sys.executable).parent)  # `aether` and `python` of this interpreter's venv


def walkthrough_blocks() -> list[tuple[str, str]]:
    """(language, text) of every code block in the README's "Your first service" section."""
    text = README.read_text()
    section = text.split("\n## Your first service\n", 1)[1].split("\n## ", 1)[0]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w+)\n(.*?)```", section, re.S)]


class Shell:
    """One README command running in the background, its output lines collected."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.command = command
        self.proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 90.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines if re.search(pattern, line)]
            if len(found) >= count:
                return found
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.command}: {count} x {pattern!r} not seen; output:\n" + "\n".join(self.lines))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        return code


def test_your_first_service_walkthrough(nats_url: str, tmp_path: Path) -> None:
    blocks = walkthrough_blocks()
    commands = [text.strip() for lang, text in blocks if lang == "bash"]
    files = {text.split(":", 1)[0].removeprefix("# "): text for lang, text in blocks if lang == "python"}
    assert sorted(files) == ["counter_service.py", "send.py"]
    server, node1, node2, tail, send, kill, send_again = commands
    assert server == "aether server" and send == send_again and kill == "kill -9 <pid of n1>"
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {**os.environ, "AETHER_NATS_URL": nats_url, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)

    started: list[Shell] = []
    try:
        for command in (node1, node2):
            started.append(Shell(command, tmp_path, env))
        for shell in started:
            shell.wait_for(r"serving cluster counters")
        watcher = Shell(tail, tmp_path, env)
        started.append(watcher)
        watcher.wait_for("following")

        first = subprocess.run(["bash", "-c", send], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        values = [re.fullmatch(r"(\w+) = (\d+) \(on (n[12])\)", line) for line in first.stdout.splitlines()]
        assert [(m.group(1), m.group(2)) for m in values if m] == [("apples", "1"), ("pears", "1"), ("plums", "1"),
                                                                   ("apples", "2")], first.stdout

        subprocess.run(["bash", "-c", kill.replace("<pid of n1>", str(started[0].proc.pid))], check=True, timeout=30)
        assert started[0].proc.wait(30) == -signal.SIGKILL

        second = subprocess.run(["bash", "-c", send_again], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 0, second.stderr
        assert second.stdout.splitlines() == ["apples = 3 (on n2)", "pears = 2 (on n2)", "plums = 2 (on n2)",
                                              "apples = 4 (on n2)"], second.stdout

        seen = watcher.wait_for(r" Incremented \{\"by\":1\}", count=8)
        assert any(" apples v4 Incremented" in line for line in seen), seen
        assert watcher.stop(signal.SIGINT) == 130
    finally:
        for shell in started:
            shell.stop()


@pytest.mark.parametrize("name", ["counter_service.py", "send.py"])
def test_walkthrough_files_are_clean_python(name: str, tmp_path: Path) -> None:
    text = dict((t.split(":", 1)[0].removeprefix("# "), t) for lang, t in walkthrough_blocks() if lang == "python")
    (tmp_path / name).write_text(text[name])
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", "--line-length", "120",
                             "--select", "E,F,W,I,B,UP", name], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
