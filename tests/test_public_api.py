"""The public surface: every public module declares ``__all__`` (and every name in it exists), and
the error tree documented in :mod:`aether.errors` lists exactly the AetherError subclasses the
package exports."""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import pytest

import aether
from aether import errors
from aether.errors import AetherError

# aether.integrations.* adapt third-party libraries and document their own errors (which also
# derive from those libraries' errors); aether.demo is an example application with its own domain
# errors. Neither belongs to the library's error tree.
_OWN_ERROR_TREES = ("aether.integrations", "aether.demo")


def _public_modules() -> list[ModuleType]:
    modules = [aether]
    for info in pkgutil.walk_packages(aether.__path__, "aether."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts):  # private modules, and __main__
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except ImportError as exc:  # an optional extra that is not installed
            pytest.skip(f"{info.name} needs an optional dependency: {exc}")
    return modules


def test_every_public_module_declares_all_and_every_name_exists() -> None:
    missing_all, missing_names = [], []
    for module in _public_modules():
        names = getattr(module, "__all__", None)
        if names is None:
            missing_all.append(module.__name__)
            continue
        missing_names += [f"{module.__name__}.{name}" for name in names if not hasattr(module, name)]
    assert not missing_all, f"public modules without __all__: {missing_all}"
    assert not missing_names, f"names in __all__ that do not exist: {missing_names}"


def _documented_tree() -> set[str]:
    doc = errors.__doc__ or ""
    tree = doc[doc.index("    AetherError"):]
    names: set[str] = set()
    for line in tree.splitlines():
        if not line.startswith("    "):
            break
        match = re.match(r"[\s│├└─]*([A-Z]\w*Error)\b", line)
        assert match, f"not a tree line: {line!r}"
        names.add(match.group(1))
    return names


def _exported_errors() -> set[str]:
    exported: set[str] = set()
    for module in _public_modules():
        if module.__name__.startswith(_OWN_ERROR_TREES):
            continue
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name, None)
            if isinstance(value, type) and issubclass(value, AetherError):
                exported.add(value.__name__)
    return exported


def test_the_documented_error_tree_lists_every_exported_error_and_nothing_else() -> None:
    documented, exported = _documented_tree(), _exported_errors()
    assert exported - documented == set(), "exported but missing from the tree in aether/errors.py"
    assert documented - exported == set(), "in the tree in aether/errors.py but not exported"


def test_the_error_tree_shows_the_real_parents() -> None:
    """Each documented child sits under its real base class (the indentation is the hierarchy)."""
    doc = errors.__doc__ or ""
    stack: list[tuple[int, str]] = []
    classes = {cls.__name__: cls for cls in _all_subclasses(AetherError)}
    for line in doc[doc.index("    AetherError"):].splitlines():
        if not line.startswith("    "):
            break
        match = re.match(r"([\s│├└─]*)([A-Z]\w*Error)\b", line)
        assert match
        depth, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            assert issubclass(classes[name], classes[stack[-1][1]]), f"{name} is not a {stack[-1][1]}"
        stack.append((depth, name))


def _all_subclasses(cls: type[AetherError]) -> list[type[AetherError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _all_subclasses(sub)
    return found


def test_jetstream_api_error_is_public_and_keeps_its_code() -> None:
    from aether._nats import JetStreamApiError as adapter_error

    assert adapter_error is errors.JetStreamApiError
    err = errors.JetStreamApiError("STREAM.INFO.X", 404, 10059, "stream not found")
    assert isinstance(err, errors.StoreError)
    assert (err.code, err.err_code, err.description) == (404, 10059, "stream not found")
