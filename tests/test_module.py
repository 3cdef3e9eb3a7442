"""potflow as a Snakemake module of another workflow.

The outer workflow lives in a temporary folder: potflow's own files (schema, rule scripts,
envs, the potflow package) must come from potflow's checkout, the user's data and results
from the outer workflow's working directory.
"""

import os
import subprocess
import sys

import pytest
import yaml
from tiny_ta import copy_tiny_groups, tiny_config

from potflow.config.load import prepare_config
from potflow.descriptors.folders import ARRAYS, read_meta
from potflow.descriptors.settings import descriptor_key
from potflow.models.files import load_model

OUTER = '''import sys


configfile: "config.yaml"


module potflow:
    snakefile:
        "{snakefile}"
    config:
        config["potflow"]


use rule * from potflow as potflow_*


rule all:
    default_target: True
    input:
        rules.potflow_all.input,
        "potflow_location.txt",


# Where the potflow package comes from, in Snakemake's process and in a job's shell.
rule potflow_location:
    output:
        "potflow_location.txt",
    params:
        main=lambda w: sys.modules["potflow"].__file__,
    shell:
        "echo {{params.main}} > {{output}}; "
        "{python} -c 'import potflow; print(potflow.__file__)' >> {{output}}"
'''


@pytest.mark.slow  # end to end: runs the workflow
def test_potflow_runs_as_a_module(repo_root, shared_data, tmp_path):
    outer = tmp_path / "outer"
    groups = copy_tiny_groups(shared_data, outer / "my_data")
    cfg = tiny_config(data_path="my_data")  # relative: to the outer workflow's directory
    (outer / "config.yaml").write_text(yaml.safe_dump({"potflow": cfg, "other_tool": {"x": 1}}))
    (outer / "Snakefile").write_text(OUTER.format(snakefile=repo_root / "Snakefile", python=sys.executable))
    # No checkout on PYTHONPATH: potflow's own rules must make its package importable.
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.realpath(p) != str(repo_root)]
    env["PYTHONPATH"] = os.pathsep.join(paths)

    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2"],
        cwd=outer, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert "rule potflow_compute_descriptors:" in out and "rule potflow_import_group:" in out

    # the package imported by Snakemake and by jobs is the module's checkout
    package = str(repo_root / "potflow" / "__init__.py")
    assert (outer / "potflow_location.txt").read_text().split() == [package, package]

    # results in the outer working directory, from the data there
    dkey = descriptor_key(prepare_config(cfg))
    for group, count in groups.items():
        folder = outer / "results" / "descriptors" / dkey / group
        assert read_meta(folder)["num_configs"] == count
        assert all((folder / f"{name}.npy").is_file() for name in ARRAYS)
        assert (outer / "results" / "logs" / "descriptors" / dkey / f"{group}.log").is_file()
    assert sorted(p.stem for p in (outer / "results" / "data").glob("*.npz")) == sorted(groups)
    # and the fit: the model file of the outer workflow's run
    _, info = load_model(outer / "results" / "fits" / "default" / "model.pt")
    assert info["epochs_trained"] == cfg["pytorch"]["num_epochs"]


def test_module_config_errors_name_the_field(repo_root, shared_data, tmp_path):
    """The module validates the config it is given (with potflow's schema) and says what is wrong."""
    outer = tmp_path / "outer"
    copy_tiny_groups(shared_data, outer / "data", {"Liquid": 1})
    cfg = tiny_config()
    cfg["bispectrum"]["twojmax"] = "six"
    (outer / "config.yaml").write_text(yaml.safe_dump({"potflow": cfg}))
    (outer / "Snakefile").write_text(OUTER.format(snakefile=repo_root / "Snakefile", python=sys.executable))
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "-n"],
        cwd=outer, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode != 0
    assert "twojmax" in res.stdout + res.stderr
    assert not (outer / "results").exists()
