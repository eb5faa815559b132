"""Every example runs as-is (``python examples/<name>.py``), starting its own embedded NATS server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "bank_account.py": ["WithdrawalRejected (recorded, not raised)", "conflicts detected and retried",
                        "upcast on read -> balance 175", "bank account example: OK"],
    "multi_tenant.py": ["every tenant sees exactly its own history", "'acme.>' received 6 events",
                        "multi-tenant example: OK"],
    "sharded_cluster.py": ["handled by their owners", "node-3 left", "nothing lost in the handoff",
                           "sharded cluster example: OK"],
    "event_bus_fanout.py": ["node 2: received all 200 events once each", "actor prefix 'vip-' -> 20",
                            "event bus fan-out example: OK"],
}


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_with_embedded_server(name: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AETHER_NATS_URL"}
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=180,
                            env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in EXPECTED[name]:
        assert line in result.stdout, result.stdout
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # the embedded server's folder is gone


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_twice_against_the_same_server(name: str, nats_url: str, tmp_path: Path) -> None:
    for _ in range(2):
        result = subprocess.run([sys.executable, str(EXAMPLES / name), nats_url], capture_output=True, text=True,
                                timeout=180, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert EXPECTED[name][-1] in result.stdout


def test_every_example_says_how_to_run_it_in_its_first_lines() -> None:
    for path in EXAMPLES.glob("*.py"):
        head = path.read_text().splitlines()[:6]
        assert f"    python examples/{path.name} [nats://127.0.0.1:4222]" in head, path.name
