"""The repository's layout: four stage scripts and apo_algorithm.py at the root, everything else in
the `apo` package, and imports that only go downward.

Layers, top to bottom (a module may import from its own layer's package modules and from lower
layers, never from a higher one):

    3  the stage scripts: prepare_data, train_math_apo, evaluate_apo, demo_apo_pipeline (only the
       demo, which walks through the other three, imports a script)
    2  the trainer's stage modules that build on the algorithm: apo.stage1, apo.correction
    1  apo_algorithm (the method: V*, the losses, log-probs, the value head)
    0  every other apo.* module

and no circle anywhere in the import graph (within a layer too): every import counts, at module
level, inside a function, or under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO_ROOT

SCRIPTS = {"prepare_data", "train_math_apo", "evaluate_apo", "demo_apo_pipeline"}
ROOT_MODULES = SCRIPTS | {"apo_algorithm"}
STAGE_MODULES = {"apo.stage1", "apo.correction"}


def layer(module: str) -> int:
    if module in SCRIPTS:
        return 3
    if module in STAGE_MODULES:
        return 2
    if module == "apo_algorithm":
        return 1
    return 0


def project_modules() -> dict[str, Path]:
    found = {path.stem: path for path in REPO_ROOT.glob("*.py")}
    found.update({f"apo.{path.stem}": path for path in (REPO_ROOT / "apo").glob("*.py") if path.stem != "__init__"})
    return found


def imported_project_modules(path: Path, known: set[str]) -> set[str]:
    """Project modules imported anywhere in the file (module level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in known}


def test_root_holds_only_the_stage_scripts_and_the_algorithm():
    assert {path.stem for path in REPO_ROOT.glob("*.py")} == ROOT_MODULES


MODULES = project_modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_downward(module):
    imported = imported_project_modules(MODULES[module], set(MODULES)) - {module}
    upward = sorted(other for other in imported if layer(other) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports {upward} from a higher layer"
    if module != "demo_apo_pipeline":  # the walkthrough calls each stage's main; no other script imports a script
        assert not imported & SCRIPTS, f"{module} imports the stage script(s) {sorted(imported & SCRIPTS)}"


def test_the_layer_check_catches_an_upward_import(tmp_path):
    upward = tmp_path / "grading.py"
    upward.write_text("import os\n\ndef f():\n    from train_math_apo import main\n    return main\n")
    assert imported_project_modules(upward, set(MODULES)) == {"train_math_apo"}
    assert layer("train_math_apo") > layer("apo.grading")


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    return {module: imported_project_modules(path, set(modules)) - {module} for module, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as [a, b, ..., a], or None (depth-first search, sorted for a stable answer)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for other in sorted(graph.get(node, ())):
            if state.get(other) == 1:
                return path[path.index(other):] + [other]
            if other not in state and (found := visit(other)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_circle():
    cycle = find_cycle(import_graph(MODULES))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_circle_check_finds_a_circle_through_a_function_level_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_trainer_only_modules_say_so_in_their_first_line():
    for module in ("apo.stage1", "apo.correction", "apo.checkpoints", "apo.training_log"):
        first_line = ast.get_docstring(ast.parse(MODULES[module].read_text(encoding="utf-8"))).splitlines()[0]
        assert "train_math_apo.py" in first_line, module
