"""Breaks the SQLite ledger on purpose: its change counter never moves, so kept snapshots are never dropped.

On PYTHONPATH (tests/ledger/test_kept_snapshots.py puts it there for a run of the suite's sharing
tests), every process of that run trusts snapshots other processes have made stale. The patch is made
when the ledger module is first imported; a sitecustomize further along the path (CI's faketime fix)
still runs.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TARGET = "budget_mcp.ledger.sqlite"


class _Stale(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.loader is not None
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            module.data_version = lambda conn: 0  # type: ignore[attr-defined]

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _Stale())

_here = Path(__file__).resolve().parent
for _entry in sys.path:
    _next = Path(_entry or ".").resolve() / "sitecustomize.py"
    if _next.parent != _here and _next.is_file():
        _spec = importlib.util.spec_from_file_location("_next_sitecustomize", _next)
        if _spec is not None and _spec.loader is not None:
            _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
        break
