"""The public surface: what ``cancelpool`` exports, under which names, at what cost."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import cancelpool

INIT = Path(cancelpool.__file__)

# The double-l spellings some seed documents use, and the objects they must name.
# Names loaded on first use by the package's __getattr__ (they pull in sqlite3), and the
# public module they live in.
LAZY = {"AsyncQueue": "cancelpool", "Queue": "cancelpool.queue"}

DOUBLE_L_ALIASES = {
    "Cancellable": "Cancelable",
    "CancellationError": "CancelationError",
    "CancellationToken": "CancelationToken",
    "LinkedCancellationToken": "LinkedCancelationToken",
}


def test_all_is_a_sorted_tuple_of_unique_names() -> None:
    names = cancelpool.__all__
    assert isinstance(names, tuple)
    assert list(names) == sorted(names)
    assert len(set(names)) == len(names)


def test_every_name_resolves() -> None:
    missing = [name for name in cancelpool.__all__ if not hasattr(cancelpool, name)]
    assert missing == []


def test_all_lists_every_public_name_the_package_defines() -> None:
    # Public names bound in __init__.py (imports, aliases) and nothing else.
    tree = ast.parse(INIT.read_text())
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            bound.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Assign):
            bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
    public = {name for name in bound if not name.startswith("_") and name != "annotations"}
    assert public | set(LAZY) == set(cancelpool.__all__)


def test_each_name_is_imported_once_in_init() -> None:
    tree = ast.parse(INIT.read_text())
    imported = [
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module != "__future__"
        for alias in node.names
    ]
    duplicates = sorted({name for name in imported if imported.count(name) > 1})
    assert duplicates == []


def test_public_classes_and_functions_carry_the_public_module() -> None:
    wrong = {}
    for name in cancelpool.__all__:
        obj = getattr(cancelpool, name)
        is_own = inspect.isclass(obj) or inspect.isfunction(obj)
        expected = LAZY.get(name, "cancelpool")
        if is_own and obj.__name__ == name and obj.__module__ != expected:
            wrong[name] = obj.__module__
    assert wrong == {}


def test_double_l_aliases_are_the_same_objects() -> None:
    for alias, name in DOUBLE_L_ALIASES.items():
        assert alias in cancelpool.__all__
        assert getattr(cancelpool, alias) is getattr(cancelpool, name)


def test_import_stays_light() -> None:
    heavy = ("rich", "sqlite3", "_sqlite3", "click", "platformdirs", "tomllib")
    code = f"import sys, cancelpool\nprint(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""


def test_version_is_a_string() -> None:
    assert isinstance(cancelpool.__version__, str)
