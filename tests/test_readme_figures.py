"""README's performance table is the rendering of one committed benchmark run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_readme", ROOT / "benchmarks" / "render_readme.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_table_is_the_committed_run() -> None:
    render = _renderer()
    run = json.loads((ROOT / "benchmarks" / "readme_run.json").read_text())
    readme = (ROOT / "README.md").read_text()
    block = render.render(run)
    assert block in readme, (
        "README's performance table is not the rendering of "
        "benchmarks/readme_run.json: run "
        "`python benchmarks/render_readme.py benchmarks/readme_run.json --write README.md`"
    )
    # Every cancelpool row with a target is in it, misses included.
    judged = [r for r in run["rows"] if r["subject"].startswith("cancelpool") and r["target"]]
    assert judged
    assert block.count("**MISS**") == sum(r["target_met"] is False for r in judged)


def test_a_hand_edit_is_caught() -> None:
    render = _renderer()
    run = json.loads((ROOT / "benchmarks" / "readme_run.json").read_text())
    # The first row the table shows, with its value changed.
    index = next(i for i, r in enumerate(run["rows"]) if r["subject"].startswith("cancelpool"))
    run["rows"][index] = {**run["rows"][index], "value": run["rows"][index]["value"] * 2}
    assert render.render(run) not in (ROOT / "README.md").read_text()
