"""``aether demo``: a small run passes its own verification; the verification catches tampering;
Ctrl-C cleans up every process and temporary file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import psutil
import pytest

from aether._ids import new_id
from aether.aggregate import COMMAND_KEY
from aether.demo.bank import BankCommand, BankService
from aether.demo.verify import CommandRecord, VerificationReport, load_histories, verify_histories
from aether.event import Event
from aether.store import InMemoryEventStore

pytestmark = pytest.mark.anyio


def _leftovers(marker: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if marker in cmdline and proc.pid != os.getpid():
            found.append(f"{proc.pid}: {cmdline}")
    return found


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "aether", "demo", "--plain", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def test_small_demo_passes_its_verification(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--accounts", "25", "--duration", "6", "--concurrency", "12", "--seed", "7")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert "VERIFIED: 25 accounts" in out
    assert "SIGKILL node-" in out and "failover done" in out and "restarted node-" in out
    assert "shards moved back" in out
    assert "in doubt (never acknowledged)" in out
    assert list(tmp_path.iterdir()) == []            # temporary folder (NATS store included) removed
    assert _leftovers(str(tmp_path)) == []           # no nats-server left behind
    cluster = out.split("(cluster ", 1)[1].split(")", 1)[0]
    assert _leftovers(cluster) == []                 # no node process left behind


def test_ctrl_c_cleans_up(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--accounts", "20", "--duration", "60")
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    seen = ""
    while "driving deposits" not in seen:
        line = proc.stdout.readline()
        assert line and time.monotonic() < deadline, seen
        seen += line
    cluster = seen.split("(cluster ", 1)[1].split(")", 1)[0]
    assert _leftovers(cluster)  # the nodes run
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, seen + out
    assert "interrupted" in out and "Traceback" not in out
    assert _leftovers(cluster) == [] and _leftovers(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []


# ---- the verification itself ----------------------------------------------------------------------
async def _honest_run() -> tuple[InMemoryEventStore, dict[str, list[Event]], list[CommandRecord]]:
    """Commands through the real BankService (no cluster), with a ledger kept like the driver keeps it."""
    store = InMemoryEventStore()
    service = BankService.create(store, "n1", snapshot_every=3)
    ledger: list[CommandRecord] = []

    async def send(actor: str, op: str, amount: int = 0) -> None:
        record = CommandRecord(command_id=new_id(), actor_id=actor, op=op, amount=amount)
        ledger.append(record)
        reply = await service.execute(actor, BankCommand(op=op, command_id=record.command_id,  # type: ignore[arg-type]
                                                         amount=amount))
        assert reply.ok
        record.acked, record.outcome, record.version, record.balance = True, reply.outcome, reply.version, reply.balance

    for actor in ("acct-1", "acct-2"):
        await send(actor, "open")
        await send(actor, "deposit", 100)
        await send(actor, "withdraw", 30)
        await send(actor, "withdraw", 500)   # rejected, as an event
        await send(actor, "deposit", 5)
    retried = ledger[2]                      # a retry of an acknowledged command: answered from history
    again = await service.execute(retried.actor_id, BankCommand(op="withdraw", command_id=retried.command_id,
                                                                amount=retried.amount))
    assert again.duplicate and again.version == retried.version and again.outcome == "MoneyWithdrawn"
    await service.repository.aclose()
    histories, _ = await load_histories(store, ["acct-1", "acct-2"])
    return store, histories, ledger


def _replace(histories: dict[str, list[Event]], actor: str, index: int, **changes: object) -> dict[str, list[Event]]:
    copy = {k: list(v) for k, v in histories.items()}
    copy[actor][index] = msgspec.structs.replace(copy[actor][index], **changes)
    return copy


async def test_verification_passes_an_honest_history() -> None:
    store, histories, ledger = await _honest_run()
    _, rebuilt = await load_histories(store, histories)
    report = verify_histories(histories, ledger, rebuilt=rebuilt)
    assert report.ok, report.problems
    assert (report.accounts, report.events, report.acked, report.rejected_withdrawals) == (2, 10, 10, 2)
    assert report.total_balance == 2 * 75


Tamper = Callable[[dict[str, list[Event]], list[CommandRecord]],
                  tuple[dict[str, list[Event]], list[CommandRecord]]]


def _drop(h: dict[str, list[Event]], actor: str, index: int) -> dict[str, list[Event]]:
    copy = {k: list(v) for k, v in h.items()}
    del copy[actor][index]
    return copy


TAMPERINGS: dict[str, tuple[Tamper, str]] = {
    "amount changed": (lambda h, led: (_replace(h, "acct-1", 1, data={"amount": 1000}), led), "amount 1000"),
    "event removed (gap)": (lambda h, led: (_drop(h, "acct-1", 2), led), "versions are not"),
    "last acknowledged event lost": (lambda h, led: (_drop(h, "acct-2", 4), led), "is not stored"),
    "command stored twice": (
        lambda h, led: ({**h, "acct-2": [*h["acct-2"], msgspec.structs.replace(h["acct-2"][1], version=6,
                                                                                id=new_id())]}, led),
        "stored 2 times"),
    "phantom event": (
        lambda h, led: ({**h, "acct-1": [*h["acct-1"], Event("MoneyDeposited", "acct-1", 6, {"amount": 9},
                                                              {COMMAND_KEY: "forged"})]}, led),
        "never sent"),
    "withdrawal accepted beyond the balance": (
        lambda h, led: (_replace(h, "acct-1", 3, event_type="MoneyWithdrawn", data={"amount": 500}), led),
        "accepted with balance"),
    "rejection with enough money": (
        lambda h, led: (_replace(h, "acct-2", 2, event_type="WithdrawalRejected",
                                 data={"amount": 30, "balance": 100}), led),
        "rejected with balance"),
    "acknowledged balance differs": (
        lambda h, led: (h, [msgspec.structs.replace(r, balance=(r.balance or 0) + 1) if i == 4 else r
                            for i, r in enumerate(led)]),
        "node reported balance"),
    "missing command id": (
        lambda h, led: (_replace(h, "acct-2", 0, metadata={}), led), "carries no command id"),
    "event moved to another account": (
        lambda h, led: (_replace(h, "acct-1", 4, actor_id="acct-2"), led), "belongs to"),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
async def test_verification_detects_tampering(name: str) -> None:
    _, histories, ledger = await _honest_run()
    tamper, expected = TAMPERINGS[name]
    bad_histories, bad_ledger = tamper(histories, ledger)
    report: VerificationReport = verify_histories(bad_histories, bad_ledger)
    assert not report.ok
    assert any(expected in problem for problem in report.problems), report.problems


async def test_verification_compares_the_rebuilt_state() -> None:
    store, histories, ledger = await _honest_run()
    _, rebuilt = await load_histories(store, histories)
    rebuilt["acct-1"].balance += 1  # a snapshot that lies
    report = verify_histories(histories, ledger, rebuilt=rebuilt)
    assert not report.ok and "repository rebuilt" in report.problems[0]


def test_demo_serves_its_dashboard(tmp_path: Path) -> None:
    import json
    import urllib.request

    proc = _demo(tmp_path, "--accounts", "20", "--duration", "6", "--concurrency", "8", "--seed", "3", "--dashboard")
    assert proc.stdout is not None
    lines: list[str] = []
    url = ""
    while not url:
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        if "dashboard of cluster" in line:
            url = line.split(": ", 1)[1].split()[0]
    cluster = lines[-1].split("dashboard of cluster ", 1)[1].split(":", 1)[0]
    members: set[str] = set()
    deadline = time.monotonic() + 120
    while len(members) < 3 and time.monotonic() < deadline:
        with urllib.request.urlopen(url + "api/state", timeout=10) as response:
            state = json.loads(response.read())
        assert state["cluster_name"] == cluster
        if state["cluster"] is not None:
            members = {m["id"] for m in state["cluster"]["members"]}
        time.sleep(0.2)
    assert members == {"node-1", "node-2", "node-3"}
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, "".join(lines) + out
    assert "VERIFIED: 20 accounts" in out
    assert list(tmp_path.iterdir()) == []
