"""The floor plan: imports inside the package only go down, and nothing imports in a loop."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "sepdense"
# Bottom to top. A unit (a top-level module or subpackage of sepdense) may import its own floor's
# units and lower floors only. Measurement, files and data at the bottom; entry points and reports on top.
FLOORS = [
    {"errors", "cli", "tables", "measure", "runs", "resolvers", "checkpoints", "stopping"},
    {"data", "models"},
    {"runtime", "optim", "metrics", "plotting", "precision", "checkpoint_io", "deployment"},
    {"module", "callbacks", "tracking"},
    {"train", "evaluate", "export", "bench"},
    {"report"},
]
FLOOR_OF = {unit: level for level, units in enumerate(FLOORS) for unit in units}


def unit_of(module: str) -> str:
    """'sepdense.bench.model' -> 'bench'; 'sepdense' (the package root) -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "sepdense" or n.startswith("sepdense.")}


def import_graph() -> dict[str, set[str]]:
    """unit -> units it imports (other than itself), from every module of the package."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        unit = unit_of(".".join(parts))
        if not unit:
            continue  # the package root only registers the config resolvers
        targets = {unit_of(m) for m in imported_modules(path)} - {unit, ""}
        graph.setdefault(unit, set()).update(targets)
    return graph


def test_every_unit_has_a_floor() -> None:
    assert set(import_graph()) <= set(FLOOR_OF), f"put {set(import_graph()) - set(FLOOR_OF)} on a floor"


def test_imports_only_go_down() -> None:
    upward = [
        f"{unit} (floor {FLOOR_OF[unit]}) imports {target} (floor {FLOOR_OF[target]})"
        for unit, targets in import_graph().items()
        for target in targets
        if FLOOR_OF[target] > FLOOR_OF[unit]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles_between_units() -> None:
    graph = import_graph()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(t == goal or (t not in seen and reaches(t, goal, seen | {t})) for t in graph.get(start, ()))

    cycles = sorted(unit for unit in graph if reaches(unit, unit, {unit}))
    assert not cycles, f"units in an import cycle: {cycles}"


def test_callbacks_and_benchmark_do_not_import_each_other() -> None:
    graph = import_graph()
    assert "bench" not in graph["callbacks"] and "callbacks" not in graph["bench"]


def test_training_entry_point_does_not_import_the_report() -> None:
    for path in (ROOT / "train.py", PACKAGE / "train.py"):
        assert not any(m.startswith("sepdense.report") for m in imported_modules(path)), path
