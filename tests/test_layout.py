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
import re
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


# --- nothing outside the checkout: a clone with nothing beside it must work ---

OUTSIDE_PATH = re.compile(r"(?<![\w./-])\.\./")  # a relative path that starts above its base: '../shared/data'
ROOT_NAMES = {"REPO_ROOT", "ROOT", "PROJECT_ROOT"}


def _dirname_depth(node: ast.AST) -> int | None:
    """How many os.path.dirname calls wrap __file__ in `node` (None when __file__ is not inside)."""
    depth, current = 0, node
    while isinstance(current, ast.Call) and current.args:
        func = current.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        depth += name == "dirname"
        current = current.args[0]
    return depth if isinstance(current, ast.Name) and current.id == "__file__" else None


def paths_beside_the_checkout(path: Path, depth: int) -> list[str]:
    """What in a file reaches above the checkout: a string with a leading '../', a '..' argument, REPO_ROOT.parent,
    Path(__file__).parents[k] or k nested os.path.dirname(__file__) beyond the root (the file sits `depth` folders
    below the root). Returns 'line N: what' items."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return [f"line {n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE_PATH.search(line)]
    found = []
    for node in ast.walk(ast.parse(text)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for offset, text_line in enumerate(node.value.splitlines()):
                if OUTSIDE_PATH.search(text_line):
                    found.append(f"line {line + offset}: {text_line.strip()}")
        elif isinstance(node, ast.Call):
            if any(isinstance(arg, ast.Constant) and arg.value == ".." for arg in node.args):
                found.append(f"line {line}: a '..' path component")
            dirnames = _dirname_depth(node)
            if dirnames is not None and dirnames > depth + 1:
                found.append(f"line {line}: {dirnames} x os.path.dirname(__file__)")
        elif isinstance(node, ast.Attribute) and node.attr == "parent" and getattr(node.value, "id", "") in ROOT_NAMES:
            found.append(f"line {line}: {node.value.id}.parent")
        elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents"
              and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int)
              and node.slice.value > depth):
            found.append(f"line {line}: .parents[{node.slice.value}]")
    return found


def non_test_files() -> list[Path]:
    """Code and configuration outside tests/ (and outside .ci/, which names CI's own data folder on purpose)."""
    files = [p for p in REPO_ROOT.glob("*.py")]
    for folder, pattern in (("apo", "*.py"), ("bench", "*.py"), ("configs", "*.yaml")):
        files += sorted((REPO_ROOT / folder).glob(pattern))
    return files + [REPO_ROOT / "Makefile"]


def test_no_code_or_default_names_a_path_beside_the_checkout():
    """Issue 25: defaults read ../shared/data, which a user's clone does not have."""
    found = {str(p.relative_to(REPO_ROOT)): paths_beside_the_checkout(p, len(p.relative_to(REPO_ROOT).parts) - 1)
             for p in non_test_files()}
    found = {name: items for name, items in found.items() if items}
    assert not found, f"paths beside the checkout (ship the data or take it from a flag or APO_SHARED_DATA): {found}"


@pytest.mark.parametrize("source, depth", [
    ('SHARED = REPO_ROOT.parent / "shared" / "data"\n', 1),
    ('import os\nDATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared")\n', 1),
    ('import os\nDATA = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))\n', 1),
    ('from pathlib import Path\nDATA = Path(__file__).resolve().parents[2] / "shared"\n', 1),
    ('"""Run: python x.py --train_path ../shared/data/math/train.jsonl"""\n', 0),
])
def test_the_outside_path_check_catches_each_form(tmp_path, source, depth):
    path = tmp_path / "module.py"
    path.write_text(source)
    assert paths_beside_the_checkout(path, depth)


def test_the_outside_path_check_passes_paths_inside(tmp_path):
    path = tmp_path / "module.py"
    path.write_text('from pathlib import Path\nimport os\nROOT = Path(__file__).resolve().parents[1]\n'
                    'HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n'
                    '"""the adapter is in folder/../adapter; levels \'Level 1\'..\'Level 5\'"""\n')
    assert paths_beside_the_checkout(path, 1) == []
