"""One-way layering, checked on the source with ``ast`` (see docs/architecture.md)::

    model (event, errors, names, codec, _ids)
      → adapter (_nats, connect, _tasks, _observers)
        → components (store, bus, cluster, projection, metrics, tracing, permissions)
          → aggregate → applications (cli, demo, dashboard, integrations; the nats-server
            launcher ``aether.server``)
    aether.testing may import anything; nothing in production imports it.

Known violations that other branches are fixing are allow-listed below, each with its reason, so
the test fails on any NEW one; remove an entry when its fix lands (the test then also fails if an
allow-listed violation is gone, to keep the list honest).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import aether

ROOT = Path(aether.__file__).parent

MODEL = {"event", "errors", "names", "codec", "_ids", "__version__"}
ADAPTER = {"_nats", "connect", "_tasks", "_observers"}
COMPONENTS = {"store", "bus", "cluster", "projection", "metrics", "tracing", "permissions"}
# ``server``: the nats-server launcher the command line and the demo use (aether.testing re-exports it)
APPLICATIONS = {"cli", "demo", "dashboard", "integrations", "__main__", "server"}

# production modules importing aether.testing: none since the launcher moved to aether.server
KNOWN_TESTING_IMPORTS: set[str] = set()
# the bus importing the store: none since branch `busfast` landed
KNOWN_BUS_STORE_IMPORTS: set[str] = set()
# modules outside a package importing one of its private modules: none since the applications read
# a cluster through the public aether.cluster.state and aether.cluster.naming
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str]] = set()
# nats-py private attributes outside the adapter: none since branch `projcons` landed
KNOWN_NATS_PRIVATE: set[str] = set()
# a private attribute of a client (``nc``), or one of the nats-py internals Aether once used; a generic
# ``sub._x`` is not matched: Aether's own bus Subscription has private fields of that name
NATS_PRIVATE = re.compile(r"\b(?:nc|self\._nc|self\.nc)\._[a-z]\w*|\._inbox_prefix\b|\._error_cb\b"
                          r"|\._pending_queue\b|\._resp_sub_prefix\b|\._message_iterator\b|\._pending_size\b")
NATS_ADAPTER = {"aether._nats", "aether.connect"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _sources() -> dict[str, tuple[Path, str]]:
    return {_module_name(path): (path, path.read_text()) for path in sorted(ROOT.rglob("*.py"))}


@cache
def _imports() -> dict[str, frozenset[str]]:
    """Every ``aether...`` module each module imports (``from a import b`` counts ``a`` and ``a.b``)."""
    graph: dict[str, frozenset[str]] = {}
    for name, (path, text) in _sources().items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    if path.name != "__init__.py":
                        base.pop()
                    base = base[:len(base) - (node.level - 1)]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                found.add(module)
                found |= {f"{module}.{alias.name}" for alias in node.names}
        graph[name] = frozenset(m for m in found if m == "aether" or m.startswith("aether."))
    return graph


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "aether"


def _violations(source_areas: set[str], target_areas: set[str]) -> set[tuple[str, str]]:
    return {(module, target) for module, targets in _imports().items() if _area(module) in source_areas
            for target in targets if _area(target) in target_areas}


def test_the_import_graph_is_read() -> None:  # the rules below would pass vacuously otherwise
    graph = _imports()
    assert "aether.errors" in graph["aether.cluster.manager"]
    assert "aether.cluster._kv" in graph["aether.cluster.leader"]


def test_the_model_imports_only_the_model() -> None:
    others = {_area(m) for m in _sources()} - MODEL
    assert _violations(MODEL, others) == set()


def test_the_adapter_imports_only_the_model_and_itself() -> None:
    others = {_area(m) for m in _sources()} - MODEL - ADAPTER
    assert _violations(ADAPTER, others) == set()


def test_components_and_aggregate_never_import_applications_or_testing() -> None:
    assert _violations(COMPONENTS | {"aggregate"}, APPLICATIONS | {"testing"}) == set()


def test_the_store_imports_no_other_component() -> None:
    assert _violations({"store"}, COMPONENTS - {"store", "tracing"} | {"aggregate"}) == set()


def test_nothing_in_production_imports_aether_testing() -> None:
    found = {module for module, _ in _violations({_area(m) for m in _sources()} - {"testing"}, {"testing"})}
    assert found == KNOWN_TESTING_IMPORTS, "a NEW import of aether.testing in production (or a known one fixed)"


def test_the_bus_does_not_import_the_store() -> None:
    found = {module for module, _ in _violations({"bus"}, {"store"})}
    assert found == KNOWN_BUS_STORE_IMPORTS


def test_private_modules_are_imported_only_inside_their_package() -> None:
    found: set[tuple[str, str]] = set()
    for module, targets in _imports().items():
        if _area(module) == "testing":
            continue
        for target in targets & _sources().keys():  # modules, not names imported from them
            parts = target.split(".")
            private = next((i for i, part in enumerate(parts) if i >= 2 and part.startswith("_")), None)
            if private is None:
                continue
            package = ".".join(parts[:private])
            if not (module == package or module.startswith(package + ".")):
                found.add((module, ".".join(parts[:private + 1])))
    assert found == KNOWN_PRIVATE_IMPORTS


def test_permissions_does_not_import_private_cluster_modules() -> None:
    assert not {t for t in _imports()["aether.permissions"] if t.startswith("aether.cluster._")}


def test_no_nats_py_private_attribute_outside_the_adapter() -> None:
    found = {name for name, (_, text) in _sources().items()
             if name not in NATS_ADAPTER and not name.startswith("aether._nats.") and NATS_PRIVATE.search(text)}
    assert found == KNOWN_NATS_PRIVATE, "a nats-py private attribute used outside aether/_nats/, aether/connect.py"


def test_the_nats_private_pattern_catches_what_it_must() -> None:
    for text in ("nc._inbox_prefix", "self._nc._error_cb = cb", "sub._pending_queue.put_nowait(None)",
                 "nc._resp_sub_prefix"):
        assert NATS_PRIVATE.search(text), text
    assert not NATS_PRIVATE.search("self._nc.publish(subject)")


def _runtime_nats_importers() -> set[str]:
    """Modules importing nats-py outside ``if TYPE_CHECKING:`` blocks."""
    found: set[str] = set()
    for name, (path, text) in _sources().items():
        tree = ast.parse(text, str(path))
        typing_only = {id(sub) for node in ast.walk(tree)
                       if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                       for sub in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "nats" for a in node.names):
                found.add(name)
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "nats":
                found.add(name)
    return found


def test_projection_kv_leases_and_dead_letters_speak_nats_only_through_the_adapter() -> None:
    # one KV client, one lease, one create-or-adopt: aether/_nats/kv.py, lease.py, streams.py
    kv_users = {"aether.projection._kv", "aether.projection.checkpoint", "aether.projection.lease",
                "aether.projection.deadletter", "aether.cluster._kv", "aether.cluster.leader", "aether.permissions"}
    assert kv_users <= _sources().keys()
    assert not kv_users & _runtime_nats_importers()


def test_the_cluster_speaks_nats_only_through_the_adapter() -> None:
    # the node-process harness of the tests and benchmarks lives in aether.testing.node_process
    assert "aether.testing.node_process" in _sources()
    assert {m for m in _runtime_nats_importers() if _area(m) == "cluster"} == set()


def test_the_applications_and_test_support_speak_nats_only_through_the_adapter() -> None:
    # nats-py types in their signatures only; run-time needs (connect, ordered consumers) go through
    # aether.connect and aether._nats.apps
    found = {m for m in _runtime_nats_importers() if _area(m) in {"cli", "demo", "dashboard", "server", "testing"}}
    assert found == set()


def test_the_bus_and_the_store_speak_nats_only_through_the_adapter() -> None:
    # they import nats-py only for type annotations; exceptions, the reply inbox and the error table
    # come from aether._nats
    speaking = {"aether.bus.nats", "aether.store._history", "aether.store.jetstream"}
    assert not speaking & _runtime_nats_importers()
    assert {m for m in _runtime_nats_importers() if _area(m) in {"bus", "store"}} == set()


def test_permission_refusal_text_is_read_only_by_the_adapter() -> None:
    found = {name for name, (_, text) in _sources().items() if "permissions violation" in text.lower()}
    assert found == {"aether._nats.errors"}


def test_only_the_adapter_imports_nats_py_at_run_time() -> None:
    # issue 11: at most 8 modules; today three, all in the adapter (see docs/architecture.md)
    assert _runtime_nats_importers() == {"aether._nats.errors", "aether._nats.apps", "aether.connect"}
