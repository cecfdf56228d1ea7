"""The pool's modules import each other without cycles (but under TYPE_CHECKING), and
the worker-side modules import nothing of the caller side."""

from __future__ import annotations

import ast
from pathlib import Path

import cancelpool

PACKAGE = Path(cancelpool.__file__).resolve().parent
WORKER_SIDE = {
    "_pool._worker_process",
    "_pool._remote",
    "_pool._protocol",
    "_pool._payload",
    "_pool._watchdog",
    "_pool._precise_wait",
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


def _handle_fields() -> set[str]:
    """The private fields a JobHandle sets in ``__init__`` (Future's among them)."""
    tree = ast.parse((PACKAGE / "_pool" / "_handle.py").read_text())
    handle = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "JobHandle")
    init = next(n for n in handle.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    fields: set[str] = set()
    for node in ast.walk(init):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
                and target.attr.startswith("_")
            ):
                fields.add(target.attr)
    return fields


def test_no_module_reads_a_handles_private_fields() -> None:
    # A JobHandle is the caller's Future: the supervisor changes it only through the
    # methods it declares for that (as an executor calls Future.set_result), never by
    # reaching into its fields or Future's.
    fields = _handle_fields()
    assert {"_state", "_condition", "_owner", "_partial"} <= fields, sorted(fields)
    # Every module that holds handles: the caller's side of the pool, the queue's
    # server and client, the dashboard and the CLI.
    holders = [PACKAGE / (module.replace(".", "/") + ".py") for module in CALLER_SIDE]
    holders += [*PACKAGE.glob("queue/*.py"), *PACKAGE.glob("web/*.py"), PACKAGE / "cli.py"]
    reaches: list[str] = []
    for path in sorted(holders):
        if path == PACKAGE / "_pool" / "_handle.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in fields
                and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"})
            ):
                where = path.relative_to(PACKAGE)
                reaches.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    assert not reaches, "\n".join(reaches)
