"""The package's shape: imports run one way (no cycles), and every stage has its three hops."""

import ast
import os
import re
from pathlib import Path

import pytest

from potflow.workflow import layout

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


# stage -> the potflow package (or module) its script runs: rules/X.smk -> workflow_scripts/X.py -> it
STAGES = {
    "data": "potflow.data",
    "descriptors": "potflow.descriptors",
    "training": "potflow.training",
    "committee": "potflow.evaluation.committee",
    "evaluation": "potflow.evaluation",
    "export": "potflow.lammps",
    "md": "potflow.lammps",
    "properties": "potflow.properties",
    "sweeps": "potflow.config.sweeps",
}
RULE_FILES = sorted((ROOT / "rules").glob("*.smk"))
SCRIPT = re.compile(r"^\s+script:\s*\n\s+\"([^\"]+)\"", re.MULTILINE)


def test_the_stages_are_the_layouts():
    assert tuple(STAGES) == layout.STAGES


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_is_three_hops(stage):
    """rules/X.smk -> workflow_scripts/X.py -> the stage's potflow package, for every stage."""
    rule_file = ROOT / "rules" / f"{stage}.smk"
    assert rule_file.exists(), rule_file
    scripts = set(SCRIPT.findall(rule_file.read_text()))
    assert scripts == {f"../workflow_scripts/{stage}.py"}, f"{rule_file} runs {scripts}"
    script = ROOT / "workflow_scripts" / f"{stage}.py"
    package = STAGES[stage]
    assert (PACKAGE.parent / package.replace(".", "/")).with_suffix(".py").exists() or (
        PACKAGE.parent / package.replace(".", "/")
    ).is_dir(), package
    imports = internal_imports(script)
    assert any(m == package or m.startswith(package + ".") for m in imports), (
        f"workflow_scripts/{stage}.py imports nothing of {package} (only {sorted(imports)})"
    )


def test_nothing_but_the_stages():
    """One rule file per stage (and common.smk), one script per stage, all included in order."""
    assert {p.stem for p in RULE_FILES} == {"common", *STAGES}
    assert {p.stem for p in (ROOT / "workflow_scripts").glob("*.py")} == set(STAGES)
    included = re.findall(r'^include: "rules/(\w+)\.smk"', (ROOT / "Snakefile").read_text(), re.MULTILINE)
    assert included == ["common", *STAGES]


def rules_of(text):
    """{rule name: its text} of a rule file (``use rule ... as name with:`` included)."""
    starts = list(re.finditer(r"^(?:rule (\w+)|use rule \w+ as (\w+) with):", text, re.MULTILINE))
    ends = [m.start() for m in starts[1:]] + [len(text)]
    return {(m.group(1) or m.group(2)): text[m.start() : e] for m, e in zip(starts, ends, strict=True)} if starts else {}


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_every_rule_has_a_log(rule_file):
    rules = rules_of(rule_file.read_text())
    assert bool(rules) == (rule_file.stem != "common"), rule_file  # common.smk holds no rule
    for name, text in rules.items():
        if text.startswith("rule "):  # `use rule` inherits its log unless it names its own
            assert "\n    log:\n" in text, f"rule {name} ({rule_file.name}) has no log"


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_captions_name_only_wildcards_of_their_rule(rule_file):
    """A caption (report/*.rst) naming a wildcard its rule lacks renders as broken markup."""
    for name, text in rules_of(rule_file.read_text()).items():
        for caption in re.findall(r'caption="\.\./(report/[\w.]+)"', text):
            for wildcard in re.findall(r"snakemake\.wildcards\.(\w+)", (ROOT / caption).read_text()):
                assert "{" + wildcard + "}" in text, f"{caption} names {wildcard}, which rule {name} lacks"


# Text that builds a results path by hand (potflow/workflow/layout.py names them all)
HAND_WRITTEN_PATH = re.compile(r"results/|\{RESULTS\}|[\"']results[\"']|\bRESULTS\b|logs/|fits/\{|member\{")


@pytest.mark.parametrize(
    "path",
    [ROOT / "Snakefile", *RULE_FILES, *sorted((ROOT / "workflow_scripts").glob("*.py")),
     PACKAGE / "training" / "launch.py"],
    ids=lambda p: str(p.relative_to(ROOT)),
)  # fmt: skip
def test_no_hand_written_results_path(path):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        for match in HAND_WRITTEN_PATH.finditer(line):
            if line[: match.start()].endswith("layout."):
                continue  # layout.RESULTS
            raise AssertionError(f"{path.relative_to(ROOT)}:{number}: a results path by hand: {line.strip()}")


def test_the_path_check_finds_a_path():
    for line in ['f"{RESULTS}/fits/{{fit}}/model.pt"', '"results/logs/x.log"', "log: 'logs/md.log'"]:
        assert HAND_WRITTEN_PATH.search(line), line
    assert not HAND_WRITTEN_PATH.search('layout.model("{fit}")')


# What a job of a small stage must not import: each job is a new Python process, and on small
# groups its start is most of its cost (bench/RESULTS.md, "Small jobs and descriptors").
HEAVY_MODULES = ("ase", "scipy", "torch", "pandas", "matplotlib", "tqdm")
LIGHT_JOB_MODULES = ("potflow.data.structures", "potflow.descriptors.compute", "potflow.workflow.rulescript")


def test_import_and_descriptor_jobs_import_no_heavy_module(repo_root):
    """The modules an import or descriptor job runs import none of ASE, scipy, torch, pandas,
    matplotlib (each adds 0.1-1 s to every job). Fails when one of them is imported at the top
    of potflow.data.structures or potflow.descriptors.compute (checked: ``import ase.io`` put
    back at the top of structures.py fails it)."""
    import subprocess
    import sys

    code = (
        f"import sys; import {', '.join(LIGHT_JOB_MODULES)}; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY_MODULES!r})))"
    )
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]", out.stdout
