"""Every command that README.md and docs/*.md show is run here, and the site builds strictly.

The convention (docs/development.md, "Documentation"):

* Shell commands are the lines of fenced ``bash`` and ``console`` blocks. In ``bash`` one line is
  one command (a trailing backslash continues it, ``# ...`` ends it) and ``A && B`` is two. In
  ``console`` the lines starting with ``$ `` are commands and the lines after one are what it
  prints: each must be a line of its real output.
* A block that is one snippet line (``--8<-- "docs/examples/X"``) shows that file; it is checked
  as the file (the LAMMPS input runs in LAMMPS, the Slurm script under sbatch).
* ``python`` blocks run in the finished bundled example, unless their first line says
  ``# not run by the tests: <why>``. ``yaml`` blocks are config fragments and pass the config's
  checks, unless their first line names a profile (``# profiles/<name>/config.yaml``): then
  their keys are that profile's. ``snakemake`` blocks are Snakefile code (tests/test_module.py
  runs the same construction); ``text`` and ``lammps`` blocks are shown, not run.
* Every fenced block names its language, and ``sh``/``shell``/``zsh`` are refused, so that no
  command hides from this file.

``CHECKS`` says how each command is checked; a command in the docs that it does not list, or a
listed command that the docs no longer show, fails ``test_every_command_is_checked``. The
checks take the command strings from the docs, so a command cannot drift from the code.
"""

import importlib.util
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from workflow_runs import EXAMPLE_COMMAND, job_counts, scratch_copy

from potflow.config.load import prepare_config
from potflow.config.sweeps import expand_fits

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# How each command is checked. Several kinds may apply to one command; each kind runs the
# command exactly as the docs write it, in a folder prepared for it:
#   dry      Snakemake, with -n appended, in a scratch copy of the repository (jobs planned, none run)
#   slurm    the same, with the Slurm stand-ins of tests/slurm_standin first on PATH
#   copy     as written, in the scratch copy (its inputs, e.g. Ta-example.in, made by the fixture)
#   example  as written, in a scratch copy where the bundled example has run to the end (slow)
#   short    as written, in a copy of that finished example whose config.yaml trains 3 epochs
#            (the same descriptors): the training commands, which would otherwise train 100 (slow)
#   sbatch   as written in the short copy, with stand-ins for sbatch/srun/scontrol that run the
#            job at once on this machine as one node (slow)
#   pip      with --dry-run --no-index --no-build-isolation appended, in the scratch copy: the
#            requirement resolves against what is installed, nothing is installed
#   ci       .ci/run runs it verbatim (CI); the suite does not run itself again here
#   cluster  tests/test_slurm_cluster.py runs it as written (its DOCS_COMMANDS) on the one-node
#            Slurm cluster that tests/slurm/start_cluster.sh starts; skipped without one
#   collect  with --collect-only appended, in the checkout: the selection it makes
#   repo     as written, in the checkout (lint: the same commands as tests/test_lint.py; the gpu tests on the CPU)
#   site     with --site-dir <temporary folder> appended, in the checkout
#   included a file the page shows: the command that runs it runs this file (test_included_files)
CHECKS = {
    "pip install -e .": ["pip"],
    'pip install -e ".[test]"': ["pip"],
    'pip install -e ".[slurm]"': ["pip"],
    'pip install -e ".[docs]"': ["pip"],
    "python -m pytest -q": ["ci"],
    'python -m pytest -q -m "not slow"': ["collect"],
    "python -m pytest -q -m gpu": ["collect"],
    "POTFLOW_TEST_DEVICE=cpu python -m pytest -q -m gpu": ["repo"],
    "snakemake --cores 2": ["dry", "example"],
    "snakemake --report report.html": ["example"],
    "snakemake --cores 2 --configfile configs/WBe.yaml": ["dry"],
    "snakemake --cores 2 --configfile configs/sweep_example.yaml": ["dry"],
    "snakemake --cores 2 results/leaderboard/leaderboard.tsv": ["dry"],
    "snakemake --cores 2 results/fits/default/properties/properties.tsv": ["dry"],
    "snakemake --cores 2 --config fitsnap_input=Ta-example.in": ["dry"],
    "potflow from-fitsnap Ta-example.in -o my_config.yaml": ["copy"],
    "snakemake --cores 2 --configfile my_config.yaml": ["dry"],
    "potflow --help": ["copy"],
    "potflow from-fitsnap --help": ["copy"],
    "potflow from-fitsnap Ta-linear.in -o Ta-linear.yaml": ["copy"],
    "snakemake --cores 2 --config fitsnap_input=Ta-linear.in": ["dry"],
    "snakemake --cores 2 --configfile configs/linear_example.yaml": ["dry"],
    "snakemake": ["dry"],
    "snakemake --cores 8": ["dry"],
    "snakemake --resources gpu=2": ["dry"],
    "snakemake --resources mem_mb=16000": ["dry"],
    "snakemake --unlock": ["copy"],
    "potflow gpu -n 1 -- python my_script.py": ["copy"],
    "snakemake --workflow-profile profiles/slurm": ["slurm", "cluster"],
    "bash tests/slurm/start_cluster.sh": ["ci"],
    "bash tests/slurm/start_cluster.sh stop": ["ci"],
    "snakemake results/fits/default/metrics.dat --workflow-profile profiles/slurm --set-threads train=2 --set-resources train:gpu=0 train:mem_mb=4000 train:runtime=60": ["cluster"],
    "sacct -X -P -S now-1hour -o JobID,Comment,State,ReqCPUS,ReqMem,Timelimit": ["cluster"],
    "python -m pytest -q -m slurm_cluster": ["collect"],
    "snakemake --workflow-profile profiles/slurm --until compute_descriptors": ["slurm"],
    "sbatch train_multinode.sh": ["sbatch"],
    "potflow train --config config.yaml": ["short"],
    "torchrun --standalone --nproc-per-node 4 -m potflow.cli train --config config.yaml": ["short"],
    "potflow train --config configs/sweep_example.yaml --fit layer_sizes-16_seed-0": ["example"],
    "lmp -in in.nve": ["example"],
    "lmp -var potflow_dir my_potential -in in.nve": ["example"],
    "snakemake --lint": ["repo"],
    "snakefmt --check Snakefile rules/": ["repo"],
    "ruff check .": ["repo"],
    "mkdocs build --strict": ["site"],
    "file:docs/examples/train_multinode.sh": ["included"],
}

# Figures the docs state about a command, checked when it runs: command -> (page, pattern).
STATED_JOBS = {  # the dry run's number of jobs
    "snakemake --cores 2": ("docs/getting-started.md", r"(\d+) jobs, one to two minutes"),
    "snakemake --cores 2 --configfile configs/sweep_example.yaml": ("docs/sweeps.md", r"committee of 2: (\d+) jobs"),
}
STATED_ERRORS = ("docs/getting-started.md", r"test error of about ([\d.]+(?:e-\d+)?) eV/atom and ([\d.]+(?:e-\d+)?) eV/Å")

# Paths the docs name that the user creates (the path check below skips them).
USER_PATHS = {"profiles/mycluster/"}

SNIPPET = re.compile(r'^-{1,}8<-{1,} *"([^"]+)"$')
NOT_RUN = "# not run by the tests:"


# ----------------------------------------------------------------------------- reading the docs


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    body: list

    @property
    def where(self):
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def include(self):
        """The repository file a one-line snippet block shows (without a line range), or None."""
        if len(self.body) == 1 and (m := SNIPPET.match(self.body[0].strip())):
            return m.group(1).split(":")[0]
        return None


@dataclass
class Command:
    text: str
    where: str
    output: list = field(default_factory=list)  # console blocks: the lines shown after it


def fenced_blocks(doc):
    """Every fenced block of a Markdown file (also indented ones, in lists), dedented."""
    lines = doc.read_text().splitlines()
    blocks, i = [], 0
    opening = re.compile(r"^([ \t]*)(`{3,}|~{3,})\s*([^`\s{]*)")
    while i < len(lines):
        m = opening.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        body, j = [], i + 1
        while j < len(lines) and lines[j].strip() != fence:
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        blocks.append(Block(doc, i + 1, lang, body))
        i = j + 1
    return blocks


def strip_comment(line):
    """The line without a trailing shell comment (a # outside quotes, after a blank)."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line.rstrip()


def split_and(line):
    """``A && B`` -> [A, B] (outside quotes)."""
    parts, quote, start = [], None, 0
    for k, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif line.startswith("&&", k):
            parts.append(line[start:k].strip())
            start = k + 2
    parts.append(line[start:].strip())
    return [p for p in parts if p]


def bash_commands(block):
    joined, buf = [], ""
    for raw in block.body:
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1].rstrip() + " "
            continue
        joined.append((buf + raw.strip()) if buf else raw)
        buf = ""
    commands = []
    for line in joined:
        for part in split_and(strip_comment(line.strip())):
            commands.append(Command(part, block.where))
    return commands


def console_commands(block):
    commands = []
    for raw in block.body:
        if raw.startswith("$ "):
            commands.append(Command(raw[2:].strip(), block.where))
        elif commands and raw.strip():
            commands[-1].output.append(raw.rstrip())
    return commands


def all_blocks():
    return [b for doc in DOCS for b in fenced_blocks(doc)]


def doc_commands():
    """Every command the docs show, in the order they show them (first occurrence)."""
    found = {}
    for block in all_blocks():
        if block.lang not in ("bash", "console"):
            continue
        if block.include:
            cmds = [Command(f"file:{block.include}", block.where)]
        elif block.lang == "console":
            cmds = console_commands(block)
        else:
            cmds = bash_commands(block)
        for cmd in cmds:
            found.setdefault(cmd.text, cmd)
    return found


COMMANDS = doc_commands()


def commands_checked_by(kind):
    cmds = [c for c in COMMANDS.values() if kind in CHECKS.get(c.text, ())]
    return pytest.mark.parametrize("cmd", cmds, ids=[c.text for c in cmds])


def shell(command, cwd, timeout=300, env=None, check=True):
    """Run a command line through bash, as a user types it; the finished process."""
    run = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert run.returncode == 0, f"`{command}` in {cwd}: exit {run.returncode}\n{(run.stdout + run.stderr)[-4000:]}"
    return run


def assert_output_shown(cmd, run):
    """A console block's output lines appear in what the command printed."""
    printed = [line.rstrip() for line in (run.stdout + run.stderr).splitlines()]
    for line in cmd.output:
        assert line in printed, f"{cmd.where}: `{cmd.text}` does not print\n  {line}\nit printed:\n" + "\n".join(printed[-30:])


# ----------------------------------------------------------------------------- the convention


def test_every_command_is_checked():
    shown = set(COMMANDS)
    unchecked = sorted(shown - set(CHECKS))
    stale = sorted(set(CHECKS) - shown)
    assert not unchecked, "commands in the docs that no test runs (add them to CHECKS): " + "; ".join(
        f"{COMMANDS[c].where}: {c}" for c in unchecked
    )
    assert not stale, f"CHECKS lists commands the docs no longer show: {stale}"


def test_fenced_blocks_name_their_language():
    allowed = {"bash", "console", "python", "yaml", "text", "lammps", "snakemake"}
    bad = [f"{b.where}: ```{b.lang}" for b in all_blocks() if b.lang not in allowed]
    assert not bad, f"fenced blocks must use one of {sorted(allowed)}: {bad}"


def test_paths_the_docs_name_exist():
    """A repository path in inline code (`potflow/...`, `rules/...`) exists: no stale module paths."""
    roots = "bench|configs|data|docs|envs|potflow|profiles|report|rules|schemas|tests|workflow_scripts"
    pattern = re.compile(rf"`((?:{roots})/[\w./-]*)`")
    missing = []
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for path in pattern.findall(line):
                placeholder = "..." in path or re.search(r"(^|/)[A-Z]+(\.|/|$)", path)  # rules/X.smk
                if not placeholder and path not in USER_PATHS and not (ROOT / path).exists():
                    missing.append(f"{doc.relative_to(ROOT)}:{n}: {path}")
    assert not missing, f"paths that do not exist: {missing}"


def test_yaml_blocks_are_valid_config_fragments():
    for block in all_blocks():
        if block.lang != "yaml":
            continue
        fragment = yaml.safe_load("\n".join(block.body))
        first = block.body[0].strip()
        if first.startswith("# profiles/"):
            profile = yaml.safe_load((ROOT / first[2:].split()[0]).read_text())
            assert set(fragment) <= set(profile), f"{block.where}: keys not in {first[2:]}"
            continue
        try:
            expand_fits(prepare_config(fragment, source=block.where), source=block.where)
        except Exception as exc:  # any refusal: the fragment is not a valid config
            pytest.fail(f"{block.where}: {exc}")


def test_readme_inline_commands_are_checked_commands():
    """Commands the README names inline (`snakemake ...`, `potflow ...`) are ones CHECKS runs."""
    spans = re.findall(r"`((?:snakemake|potflow|pip|lmp|mkdocs|python|torchrun) [^`]*)`", (ROOT / "README.md").read_text())
    assert spans and not [s for s in spans if s not in CHECKS], [s for s in spans if s not in CHECKS]


def test_ci_runs_the_readme_test_command():
    """CI (.ci/run) runs the README's test command verbatim."""
    readme_lines = [
        line for b in fenced_blocks(ROOT / "README.md") if b.lang == "bash" for line in b.body
    ]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    test_line = next(line for line in readme_lines if "pytest" in line)
    assert test_line in ci
    for text, kinds in CHECKS.items():
        if "ci" in kinds:
            assert any(text in line for line in ci), text


def test_cluster_commands_are_the_ones_the_cluster_tests_run():
    """The commands marked "cluster" are those tests/test_slurm_cluster.py runs, as written."""
    import test_slurm_cluster

    marked = {text for text, kinds in CHECKS.items() if "cluster" in kinds}
    assert marked == set(test_slurm_cluster.DOCS_COMMANDS)


# ----------------------------------------------------------------------------- scratch copies


def fitsnap_input(solver="PYTORCH"):
    """A FitSNAP input file for the real Ta set (FitSNAP's Ta settings), dataPath absolute;
    for a linear solver, without the [PYTORCH] section."""
    text = (ROOT / "tests" / "data" / "fitsnap" / "Ta-pytorch.in").read_text()
    text = re.sub(r"(?m)^dataPath = .*$", f"dataPath = {ROOT.parent / 'shared' / 'data' / 'Ta_JSON'}", text)
    if solver != "PYTORCH":
        text = re.sub(r"(?ms)^\[PYTORCH\].*?(?=^\[)", "", text)
    return re.sub(r"(?m)^solver = PYTORCH$", f"solver = {solver}", text)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch copy of the repository with the inputs the docs' commands name."""
    dest = scratch_copy(tmp_path_factory.mktemp("copy"))
    (dest / "Ta-example.in").write_text(fitsnap_input())
    (dest / "Ta-linear.in").write_text(fitsnap_input("SVD"))
    (dest / "my_script.py").write_text("import os\nprint('GPUs:', os.environ.get('CUDA_VISIBLE_DEVICES'))\n")
    return dest


@pytest.fixture(scope="module")
def example(bundled_example):
    """A scratch copy in which the README's `snakemake --cores 2` ran the bundled example
    (conftest's bundled_example, shared with tests/test_slurm_cluster.py)."""
    assert COMMANDS["snakemake --cores 2"].text == EXAMPLE_COMMAND
    dest = bundled_example
    # what the LAMMPS page asks the user to do
    shutil.copy(ROOT / "docs" / "examples" / "in.nve", dest / "in.nve")
    if not (dest / "my_potential").exists():
        shutil.copytree(dest / "results" / "fits" / "default" / "lammps", dest / "my_potential")
    return dest


@pytest.fixture(scope="module")
def short(example, tmp_path_factory):
    """The finished example with a config that trains 3 epochs (the same descriptors), the
    multi-node script, and stand-ins for sbatch, srun and scontrol."""
    dest = scratch_copy(tmp_path_factory.mktemp("short"))
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    cfg["pytorch"]["num_epochs"] = 3
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for stage in ("data", "descriptors"):  # what the workflow's first two stages made
        shutil.copytree(example / "results" / stage, dest / "results" / stage)
    shutil.copy(ROOT / "docs" / "examples" / "train_multinode.sh", dest / "train_multinode.sh")
    fake = dest / "fake_slurm"
    fake.mkdir()
    stand_ins = {
        # sbatch runs the job script at once, here, as a one-node job (its --nodes is not honoured)
        "sbatch": 'export SLURM_JOB_ID=4242 SLURM_JOB_NODELIST=localhost SLURM_NNODES=1\nexec bash "$1"\n',
        "srun": 'exec "$@"\n',
        "scontrol": '[ "$1 $2" = "show hostnames" ] && echo localhost\n',
    }
    for name, body in stand_ins.items():
        (fake / name).write_text("#!/bin/sh\n" + body)
        (fake / name).chmod((fake / name).stat().st_mode | stat.S_IXUSR)
    return dest


def completed_training(folder, fit="default"):
    fit_dir = folder / "results" / "fits" / fit
    return all((fit_dir / name).is_file() for name in ("model.pt", "loss_vs_epochs.dat", "split.tsv"))


# ----------------------------------------------------------------------------- cheap checks


@commands_checked_by("dry")
def test_snakemake_dry_run(cmd, workdir):
    if "my_config.yaml" in cmd.text and not (workdir / "my_config.yaml").exists():
        # the docs make it first, with potflow from-fitsnap
        shell(COMMANDS["potflow from-fitsnap Ta-example.in -o my_config.yaml"].text, workdir)
    run = shell(f"{cmd.text} -n", workdir, timeout=300)
    assert "Job stats:" in run.stdout, run.stdout[-2000:]
    if cmd.text in STATED_JOBS:
        page, pattern = STATED_JOBS[cmd.text]
        stated = int(re.search(pattern, (ROOT / page).read_text()).group(1))
        assert sum(job_counts(run.stdout).values()) == stated, f"{page} says {stated} jobs"


@commands_checked_by("slurm")
def test_snakemake_dry_run_with_slurm_profile(cmd, workdir, tmp_path):
    env = dict(os.environ, STANDIN_SLURM_DIR=str(tmp_path / "slurm"))
    env["PATH"] = os.pathsep.join([str(ROOT / "tests" / "slurm_standin"), env["PATH"]])
    run = shell(f"{cmd.text} -n", workdir, env=env)
    assert "Job stats:" in run.stdout, run.stdout[-2000:]


@commands_checked_by("copy")
def test_command_in_a_scratch_copy(cmd, workdir):
    words = shlex.split(cmd.text)
    if "-o" in words:  # the user's folder before the command: no output file yet
        (workdir / words[words.index("-o") + 1]).unlink(missing_ok=True)
    run = shell(cmd.text, workdir, check=not cmd.output)
    assert_output_shown(cmd, run)
    if cmd.output:  # a console block showing a refusal: one line and a failure
        assert run.returncode != 0
    if "-o my_config.yaml" in cmd.text:
        assert yaml.safe_load((workdir / "my_config.yaml").read_text())["solver"] == {"solver": "PYTORCH"}
    if "-o Ta-linear.yaml" in cmd.text:
        assert yaml.safe_load((workdir / "Ta-linear.yaml").read_text())["solver"] == {"solver": "SVD"}
    if "my_script.py" in cmd.text:
        assert "GPUs:" in run.stdout


@commands_checked_by("pip")
def test_pip_install_resolves(cmd, workdir):
    # offline when the build backend is installed here; otherwise pip fetches it (CI has the index)
    offline = " --no-index --no-build-isolation" if importlib.util.find_spec("setuptools") else ""
    run = shell(f"{cmd.text} --dry-run{offline}", workdir, timeout=300)
    assert "Would install potflow" in run.stdout or "Requirement already satisfied" in run.stdout, run.stdout[-2000:]


@commands_checked_by("repo")
def test_lint_command(cmd):
    shell(cmd.text, ROOT, timeout=300)


@commands_checked_by("collect")
def test_pytest_selection(cmd):
    run = shell(f"{cmd.text} --collect-only", ROOT, timeout=300)
    assert re.search(r"\d+/\d+ tests collected \(\d+ deselected\)", run.stdout), run.stdout[-1000:]


@commands_checked_by("site")
def test_site_builds_with_warnings_as_errors(cmd, tmp_path):
    run = shell(f"{cmd.text} --site-dir {shlex.quote(str(tmp_path / 'site'))}", ROOT, timeout=300)
    assert (tmp_path / "site" / "index.html").is_file(), run.stderr[-2000:]


# ----------------------------------------------------------------------------- the bundled example


@pytest.mark.slow
def test_example_runs_to_the_end(example):
    """`snakemake --cores 2` (in the fixture): the files the docs then use exist."""
    from potflow.workflow import layout

    fit = example / "results" / "fits" / "default"
    assert (fit / "metrics.dat").is_file() and (fit / "plots" / "force_parity.png").is_file()
    assert (fit / "lammps" / "Ta_pytorch.mod").is_file()  # the include line of in.nve
    # the logs docs/results.md names
    for log in (layout.training_log("default"), layout.lammps_log("default"), layout.training_benchmark("default")):
        assert (example / log).is_file(), log
    # the test errors docs/getting-started.md states (to 10 %)
    page, pattern = STATED_ERRORS
    stated = [float(x) for x in re.search(pattern, (ROOT / page).read_text()).groups()]
    rows = [line.split() for line in (fit / "metrics.dat").read_text().splitlines()]
    got = [float(r[4]) for prop in ("Energy", "Force") for r in rows if r[:3] == ["*ALL", "Test", prop]]
    # within 10 %, or within 2e-6 for errors at the float32 floor (the linear start's ~1e-6,
    # which another CPU's rounding may move by a fraction of itself)
    assert got == pytest.approx(stated, rel=0.1, abs=2e-6), f"{page} states test MAE {stated}, the run gives {got}"


@pytest.mark.slow
@commands_checked_by("example")
def test_command_in_the_finished_example(cmd, example):
    if cmd.text == "snakemake --cores 2":  # the fixture ran it; rerun: nothing left to do
        run = shell(cmd.text, example)
        assert "Nothing to be done" in run.stdout + run.stderr
        return
    run = shell(cmd.text, example)
    assert_output_shown(cmd, run)
    if cmd.text.startswith("lmp "):
        assert "Loop time of" in run.stdout and "ERROR" not in run.stdout
    if "--report" in cmd.text:
        assert (example / "report.html").stat().st_size > 100_000
    if "--fit layer_sizes-16_seed-0" in cmd.text:
        assert completed_training(example, "layer_sizes-16_seed-0")


@pytest.mark.slow
@commands_checked_by("short")
def test_training_command(cmd, short):
    run = shell(cmd.text, short, timeout=600)
    assert completed_training(short), run.stdout[-2000:]
    if cmd.text.startswith("torchrun"):
        assert "4 processes" in run.stdout
    # the docs: a later snakemake takes the fit as done (evaluation, export and MD remain)
    planned = job_counts(shell("snakemake -n", short).stdout)
    assert "evaluate_fit" in planned and not {"train", "compute_descriptors", "import_group"} & set(planned), planned


@pytest.mark.slow
@commands_checked_by("sbatch")
def test_multinode_script_under_sbatch(cmd, short):
    env = dict(os.environ, PATH=os.pathsep.join([str(short / "fake_slurm"), os.environ["PATH"]]))
    run = shell(cmd.text, short, env=env, timeout=600)
    assert "4 processes" in run.stdout, run.stdout[-2000:]
    assert completed_training(short)


@pytest.mark.slow
def test_python_blocks_run_in_the_example(example):
    for block in all_blocks():
        if block.lang != "python" or block.body[0].startswith(NOT_RUN):
            continue
        run = subprocess.run(
            [sys.executable, "-c", "\n".join(block.body)], cwd=example, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, f"{block.where}:\n{run.stderr[-3000:]}"


def test_results_map_is_the_layout_module():
    """The map of docs/results.md is the one in potflow/workflow/layout.py, which names the paths."""
    from potflow.workflow import layout

    tree = textwrap.dedent(layout.__doc__.split("::\n", 1)[1].split("\n\nAn *evaluation*")[0]).strip("\n")
    shown = [b for b in fenced_blocks(ROOT / "docs" / "results.md") if b.body[:1] == ["results/"]]
    assert len(shown) == 1 and "\n".join(shown[0].body) == tree


def test_included_files():
    """The files the docs include are the files the tests run: docs/examples/in.nve is the
    `in.nve` of `lmp -in in.nve` (copied by the example fixture), the Slurm script runs under
    `sbatch train_multinode.sh`; and in.nve includes the file the bundled example exports."""
    included = {b.include for b in all_blocks() if b.include}
    assert included == {"docs/examples/in.nve", "docs/examples/train_multinode.sh"}
    potential = yaml.safe_load((ROOT / "config.yaml").read_text())["outfile"]["potential"]
    nve = (ROOT / "docs" / "examples" / "in.nve").read_text()
    assert re.search(rf"(?m)^include +\$\{{potflow_dir\}}/{re.escape(potential)}\.mod$", nve)
