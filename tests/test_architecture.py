"""The package's shape: imports run one way (no cycles), and every stage has its three hops."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "potflow"


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(path):
    """potflow modules a file imports, at the top or inside functions: {module: line}."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    found = {}
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from potflow.x import y` imports potflow.x.y when that is a module
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name in modules:
                found.setdefault(name, node.lineno)
                break
    return found


def import_graph():
    return {module_name(p): internal_imports(p) for p in PACKAGE.rglob("*.py")}


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, stack)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    del graph["c"]["a"]
    assert find_cycle(graph) is None


def test_package_init_files_import_nothing_of_potflow():
    """Importing one module never drags in a whole subpackage (and no hidden cycles)."""
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent.name == "cli":
            continue  # the command dispatcher: imports its commands when they run
        assert not internal_imports(init), init


STAGES = ["data", "descriptors", "training", "evaluation", "export", "md", "committee", "sweeps"]


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_is_three_hops(stage):
    """rules/X.smk -> workflow_scripts/X.py -> potflow/..., for every stage."""
    rule_file = ROOT / "rules" / f"{stage}.smk"
    assert rule_file.exists(), rule_file
    scripts = {
        line.split('"')[1].split("/")[-1]
        for line in rule_file.read_text().splitlines()
        if "workflow_scripts/" in line
    }
    assert scripts, f"{rule_file} runs no script"
    for script in scripts:
        imports = internal_imports(ROOT / "workflow_scripts" / script)
        assert imports, f"workflow_scripts/{script} imports nothing of potflow"
