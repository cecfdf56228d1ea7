"""The pool's modules import each other without cycles (but under TYPE_CHECKING), and
the worker-side modules import nothing of the caller side."""

from __future__ import annotations

import ast
from pathlib import Path

import cancelpool

PACKAGE = Path(cancelpool.__file__).resolve().parent
# The worker process's modules (the worker's main module is ``_worker`` or, renamed,
# ``_worker_process``; ``_watchdog`` once it exists): those that exist are checked.
_WORKER_NAMES = ("_worker", "_worker_process", "_remote", "_protocol", "_payload", "_watchdog")
WORKER_SIDE = {
    f"_pool.{name}" for name in _WORKER_NAMES if (PACKAGE / "_pool" / f"{name}.py").exists()
}
# Every other module of the pool is the caller's side (supervisor, worker set, handle,
# facade, settings, ...): a new one is covered without being listed.
CALLER_SIDE = {
    f"_pool.{path.stem}"
    for path in (PACKAGE / "_pool").glob("*.py")
    if path.name != "__init__.py" and f"_pool.{path.stem}" not in WORKER_SIDE
}


def _runtime_imports(module: str) -> set[str]:
    """The cancelpool modules ``module`` imports at run time (not under TYPE_CHECKING)."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text())
    package = module.rsplit(".", 1)[0].split(".")
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                for alias in node.names:
                    candidate = f"{target}.{alias.name}" if target else alias.name
                    path = PACKAGE / (candidate.replace(".", "/") + ".py")
                    found.add(candidate if path.exists() else target)
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    visit([n for n in inner if isinstance(n, ast.stmt)])

    visit(tree.body)
    return {name for name in found if (PACKAGE / (name.replace(".", "/") + ".py")).exists()}


def _graph() -> dict[str, set[str]]:
    modules = [
        str(path.relative_to(PACKAGE).with_suffix("")).replace("/", ".")
        for path in PACKAGE.glob("_pool/*.py")
        if path.name != "__init__.py"
    ]
    return {module: _runtime_imports(module) for module in modules}


def test_the_pool_modules_import_each_other_without_cycles() -> None:
    graph = _graph()
    done: set[str] = set()

    def walk(module: str, path: list[str]) -> None:
        assert module not in path, f"import cycle: {' -> '.join([*path, module])}"
        if module in done:
            return
        for target in graph.get(module, ()):
            walk(target, [*path, module])
        done.add(module)

    for module in graph:
        walk(module, [])


def test_the_worker_side_imports_nothing_of_the_caller_side() -> None:
    assert WORKER_SIDE & {"_pool._worker", "_pool._worker_process"}, "no worker module found"
    assert {"_pool._supervisor", "_pool._pool", "_pool._handle"} <= CALLER_SIDE
    graph = _graph()
    reached: set[str] = set()
    todo = list(WORKER_SIDE)
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        reached.add(module)
        todo.extend(graph.get(module, ()))
    assert not reached & CALLER_SIDE, sorted(reached & CALLER_SIDE)
