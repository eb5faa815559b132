"""Run fault tests N times beside a CPU hog; count passes and failures; keep failures' artefacts.

    python scripts/fault_loop.py --runs 30                      # the two NATS-kill fault tests
    python scripts/fault_loop.py --runs 5 --suite               # the whole suite
    python scripts/fault_loop.py --runs 10 -- tests/test_x.py   # any pytest arguments

The hog is ``--hog`` busy-loop processes (default 1), started before the first run and stopped
(by their own pids) after the last. Each run gets ``AETHER_FAULT_ARTIFACTS`` (a failed test that
started a NATS cluster leaves every server's log and store and a per-replica dump there, see
``tests/_fault_artifacts.py``) and ``AETHER_STORE_TRACE`` (every store's append decisions, see
``aether.store._trace``). A passing run's folder is deleted; a failing run's folder is kept with
its pytest output. The summary line gives runs, passes, failures and the longest run of
consecutive passes; the exit code is 0 only when every run passed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

FAULT_TESTS = [
    "tests/test_durability.py::test_r3_stream_leader_killed_during_writes",
    "tests/test_cluster_single_writer.py::test_nats_server_killed_during_workload",
]
ROOT = Path(__file__).resolve().parent.parent


def _start_hog(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]


def _stop_hog(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="number of runs (default 30)")
    parser.add_argument("--hog", type=int, default=1, help="busy-loop processes beside the tests (default 1)")
    parser.add_argument("--suite", action="store_true", help="run the whole suite instead of the fault tests")
    parser.add_argument("--out", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "aether-fault-loop"),
                        help="folder for run artefacts (default $TMPDIR/aether-fault-loop)")
    parser.add_argument("--stop-on-fail", action="store_true", help="stop at the first failing run")
    parser.add_argument("--snapshot", action="store_true",
                        help="test a copy of the committed HEAD (git archive), so edits made while the loop "
                             "runs do not change the code under test")
    parser.add_argument("pytest_args", nargs="*", help="pytest arguments (after --)")
    args = parser.parse_args(argv)
    tests = args.pytest_args or ([] if args.suite else FAULT_TESTS)
    out = Path(args.out) / time.strftime("%Y%m%dT%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    cwd, extra_env = ROOT, {}
    if args.snapshot:
        commit = subprocess.check_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], text=True).strip()
        cwd = out / f"src-{commit}"
        cwd.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(cwd)], input=archive.stdout, check=True)
        extra_env["PYTHONPATH"] = str(cwd / "src")
        print(f"testing a snapshot of commit {commit} in {cwd}", flush=True)
    hog = _start_hog(args.hog)
    passes = failures = streak = best = 0
    print(f"fault loop: {args.runs} runs of {' '.join(tests) or 'the whole suite'} beside {args.hog} busy "
          f"process(es); artefacts in {out}", flush=True)
    try:
        for run in range(1, args.runs + 1):
            folder = out / f"run-{run:03d}"
            folder.mkdir()
            env = dict(os.environ, AETHER_FAULT_ARTIFACTS=str(folder),
                       AETHER_STORE_TRACE=str(folder / "store-trace.jsonl"), CI=os.environ.get("CI", "true"),
                       **extra_env)
            started = time.monotonic()
            with open(folder / "pytest.log", "wb") as log:
                code = subprocess.call([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                        "--basetemp", str(folder / "basetemp"), *tests],
                                       cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
            took = time.monotonic() - started
            if code == 0:
                passes += 1
                streak += 1
                best = max(best, streak)
                shutil.rmtree(folder, ignore_errors=True)
                print(f"run {run}: pass ({took:.0f}s)", flush=True)
            else:
                failures += 1
                streak = 0
                tail = (folder / "pytest.log").read_text(errors="replace").splitlines()[-3:]
                print(f"run {run}: FAIL ({took:.0f}s), kept {folder}: {' | '.join(tail)}", flush=True)
                if args.stop_on_fail:
                    break
    finally:
        _stop_hog(hog)
    total = passes + failures
    print(f"fault loop done: {total} runs, {passes} passed, {failures} failed, "
          f"longest streak of passes {best}", flush=True)
    return 0 if failures == 0 and total == args.runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
