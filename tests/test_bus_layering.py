"""The bus does not depend on the store: importing it never loads a store module."""

from __future__ import annotations

import json
import subprocess
import sys

from aether.names import check_event
from aether.store import _validation


def _modules_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    modules: list[str] = json.loads(out.stdout)
    return modules


def test_import_aether_bus_loads_no_store_module() -> None:
    for statement in ("import aether.bus", "import aether", "from aether import NATSEventBus, EventBus"):
        loaded = _modules_after(statement)
        assert "aether.bus.nats" in loaded  # the bus really was imported: the check is not vacuous
        stores = [m for m in loaded if m == "aether.store" or m.startswith("aether.store.")]
        assert stores == [], f"{statement!r} loaded {stores}"


def test_store_validation_reexports_the_shared_check() -> None:
    assert _validation.check_event is check_event
