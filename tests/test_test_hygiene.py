"""The test suite observes Aether and nats-py only through public API (issue 11).

A test that reads ``sub._buf``, ``store._cache`` or ``nc._transport`` breaks silently when the
internals move (nats-py is being split into new packages); it also pins Aether's internals
in place. Tests observe through public API and public test hooks instead (read-only
properties such as ``JetStreamEventStore.history_stats``, ``Subscription.drain()``, metrics, the
server's monitoring endpoints, ``aether.testing``). Conditions are polled with
``aether.testing.wait_for``, not with a polling helper of each test file's own.

The same source rules hold for ``src/aether``: no bare ``TypeError`` (wrong input is an
``InvalidInputError``, see :mod:`aether.errors`), and no ``CancelledError`` swallowed when a task
of our own is cancelled (``aether._tasks.cancel_and_wait``).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src" / "aether"
OWN = frozenset({"self", "cls"})  # a class's own private fields are its business

# (file, attribute): why the read is justified. The test fails when an entry is no longer needed.
ALLOWED_PRIVATE_READS: dict[tuple[str, str], str] = {
    # the lagging-replica test of the eventsourcing module (landed on main during issue 11): the
    # recorders connect inside the factory's own thread, so no redirecting Client can be passed in
    # (as tests/test_store_cluster.py does); it needs a public hook in aether.integrations (esmod)
    ("test_eventsourcing_module.py", "_store"): "the recorder's store, to redirect its direct gets (see above)",
    ("test_eventsourcing_module.py", "_direct"): "the direct-get subject redirected to the lagging copy",
    ("test_eventsourcing_module.py", "_event_subject"): "the subject of an originator's events",
    # aether._nats.headers replaces nats-py's header-block parser on each client: its tests compare
    # the two parsers' output and check the replacement is in place
    ("test_nats_headers.py", "_parse_header_lines"): "nats-py's own parser, the reference the adapter's must equal",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_reads(source: str, filename: str = "<test>") -> set[str]:
    """Private attributes read, written or named (``getattr(x, "_y")``) on anything but ``self``/``cls``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in OWN):
                found.add(node.attr)
        elif (isinstance(node, ast.Call) and len(node.args) >= 2
              and ((isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr", "hasattr", "delattr"))
                   or (isinstance(node.func, ast.Attribute) and node.func.attr in ("setattr", "delattr")))):
            target, name = node.args[0], node.args[1]
            if (isinstance(name, ast.Constant) and isinstance(name.value, str) and _private(name.value)
                    and not (isinstance(target, ast.Name) and target.id in OWN)):
                found.add(name.value)
    return found


def _test_sources() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(TESTS.glob("*.py")) if path.name != Path(__file__).name}


def test_the_private_read_check_catches_what_it_must() -> None:
    assert private_reads("out.append(sub._buf.popleft())") == {"_buf"}
    assert private_reads("assert len(store._cache) <= 8") == {"_cache"}
    assert private_reads("w = getattr(nc._transport, '_io_writer', None)") == {"_transport", "_io_writer"}
    assert private_reads("reader._direct_get = 'x'") == {"_direct_get"}
    assert private_reads("monkeypatch.setattr(mod, '_CONST', 1)") == {"_CONST"}
    assert private_reads("await store.other._history.wait_index_writes()") == {"_history"}
    assert private_reads("self._store = store\nx = self._store.get()\ncls._n += 1") == set()
    assert private_reads("sub.__aenter__(); type(x).__name__") == set()


def test_tests_read_no_private_attribute_of_aether_or_nats_py_objects() -> None:
    found = {(name, attr) for name, text in _test_sources().items() for attr in private_reads(text, name)}
    assert found - ALLOWED_PRIVATE_READS.keys() == set(), "read through public API or a public test hook"
    assert ALLOWED_PRIVATE_READS.keys() - found == set(), "an allowed private read is gone: remove it from the list"


def _polling_helpers(source: str, filename: str) -> set[str]:
    """Functions that poll a condition passed in (a loop around calling a parameter, sleeping)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        params = {a.arg for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]}
        for loop in (n for n in ast.walk(node) if isinstance(n, ast.While)):
            calls = [n for n in ast.walk(loop) if isinstance(n, ast.Call)]
            calls_param = any(isinstance(c.func, ast.Name) and c.func.id in params for c in calls)
            sleeps = any(isinstance(c.func, ast.Attribute) and c.func.attr == "sleep" for c in calls)
            if calls_param and sleeps:
                found.add(node.name)
    return found


def test_the_polling_helper_check_catches_what_it_must() -> None:
    helper = ("async def eventually(check, timeout=5.0):\n"
              "    deadline = time.monotonic() + timeout\n"
              "    while not check():\n"
              "        await asyncio.sleep(0.02)\n")
    assert _polling_helpers(helper, "x") == {"eventually"}
    sync = "def wait(pred):\n    while True:\n        if pred():\n            return\n        time.sleep(0.1)\n"
    assert _polling_helpers(sync, "x") == {"wait"}
    worker = "async def worker(stop):\n    while not stop.is_set():\n        await asyncio.sleep(0.1)\n"
    assert _polling_helpers(worker, "x") == set()  # a loop of its own, not a condition poller


def test_conditions_are_polled_with_aether_testing_wait_for() -> None:
    found = {(name, helper) for name, text in _test_sources().items() for helper in _polling_helpers(text, name)}
    assert found == set(), "use aether.testing.wait_for (async) or wait_for_sync (threads, subprocess tests)"


def test_no_bare_type_error_is_raised_in_src() -> None:
    found: set[str] = set()
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, ast.Name) and exc.id == "TypeError":
                    found.add(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == set(), "raise an aether.errors class (wrong input: InvalidInputError)"


CANCEL_CATCHERS = ("asyncio.CancelledError", "CancelledError", "BaseException")


def _swallows_cancellation(node: ast.AST) -> bool:
    if isinstance(node, ast.ExceptHandler):
        if node.type is None:
            return True  # a bare except
        names = list(node.type.elts) if isinstance(node.type, ast.Tuple) else [node.type]
        catches = any(ast.unparse(n) in CANCEL_CATCHERS for n in names)
        return catches and not any(isinstance(n, ast.Raise) for n in ast.walk(node))
    return (isinstance(node, ast.Call) and ast.unparse(node.func) in ("contextlib.suppress", "suppress")
            and any(ast.unparse(a) in CANCEL_CATCHERS for a in node.args))


def cancellation_swallowed(source: str, filename: str = "<src>") -> set[int]:
    """Lines in coroutines where a ``CancelledError`` is caught and not re-raised."""
    coroutines = [n for n in ast.walk(ast.parse(source, filename)) if isinstance(n, ast.AsyncFunctionDef)]
    return {getattr(node, "lineno", 0) for coroutine in coroutines for node in ast.walk(coroutine)
            if _swallows_cancellation(node)}


def test_the_cancellation_check_catches_what_it_must() -> None:
    old = ("async def stop(self):\n"
           "    self._task.cancel()\n"
           "    with contextlib.suppress(asyncio.CancelledError):\n"
           "        await self._task\n")
    assert cancellation_swallowed(old) == {3}
    assert cancellation_swallowed(old.replace("asyncio.CancelledError", "BaseException")) == {3}
    caught = "async def f():\n    try:\n        await g()\n    except asyncio.CancelledError:\n        pass\n"
    assert cancellation_swallowed(caught) == {4}
    assert cancellation_swallowed(caught.replace("pass", "raise")) == set()
    assert cancellation_swallowed("def sync():\n    with suppress(BaseException):\n        f()\n") == set()


def test_no_cancelled_error_is_swallowed_in_src() -> None:
    """In a coroutine, ``except CancelledError``/``BaseException`` must re-raise (a conversion such
    as ``raise KeyboardInterrupt`` counts: the caller still stops), and ``suppress`` never takes
    ``CancelledError`` or ``BaseException``: use ``aether._tasks.cancel_and_wait``."""
    found = {f"{path.relative_to(SRC)}:{line}" for path in sorted(SRC.rglob("*.py"))
             for line in cancellation_swallowed(path.read_text(), str(path))}
    assert found == set()
