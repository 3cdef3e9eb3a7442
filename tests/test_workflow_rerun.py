"""Snakemake reruns only what changed: shown with Snakemake's own dry run and summary."""

import copy
import os
import subprocess
import sys
import time

import ase.io
import pytest
import yaml

GROUPS = ["Displaced_FCC", "Strained_BCC", "Surface_100", "Volume_BCC"]
CONFIG = {
    "path": {"dataPath": "data"},
    "scraper": {"scraper": "XYZ"},
    "reference": {
        "pair_style": "hybrid/overlay zero 10.0 zbl 4.0 4.8",
        "pair_coeff": ["* * zero", "* * zbl 73 73"],
    },
    "pytorch": {"learning_rate": 1.0e-3, "num_epochs": 2},
    "groups": {"Volume_BCC": {"eweight": 0.1}},
    "md": {"enabled": False},
}
PER_GROUP = ("import_group", "compute_descriptors")


def snakemake(workdir, repo_root, *args):
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), *args,
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def planned(workdir, repo_root):
    """{rule: set of groups whose output Snakemake would (re)make}, from ``--summary``."""
    lines = snakemake(workdir, repo_root, "--summary").splitlines()
    header = lines.index(next(line for line in lines if line.startswith("output_file\t")))
    plan = {}
    for line in lines[header + 1 :]:
        fields = line.split("\t")
        output, rule, status = fields[0], fields[2], fields[-1]
        if status != "no update":
            group = os.path.basename(output).removesuffix(".npz")
            plan.setdefault(rule, set()).add(group)
    return plan


def job_counts(workdir, repo_root):
    """Job counts per rule of the dry run (``-n --quiet rules``); {} when nothing is to be done."""
    out = snakemake(workdir, repo_root, "--dry-run", "--quiet", "rules")
    counts = {}
    if "Job stats:" in out:
        table = out.split("Job stats:", 1)[1].splitlines()[3:]
        for line in table:
            words = line.split()
            if len(words) != 2 or words[0] == "total":
                break
            counts[words[0]] = int(words[1])
    return counts


def write_config(workdir, cfg):
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture(scope="module")
def built(tmp_path_factory, repo_root):
    """A tiny copy of the bundled example (4 groups x 4 configs), run through the whole workflow."""
    workdir = tmp_path_factory.mktemp("rerun")
    (workdir / "data").mkdir()
    for group in GROUPS:
        frames = ase.io.read(repo_root / "data" / "Ta_example" / f"{group}.xyz", index=":4")
        ase.io.write(workdir / "data" / f"{group}.xyz", frames, format="extxyz")
    write_config(workdir, CONFIG)
    snakemake(workdir, repo_root, "--cores", "2", "--quiet", "all")
    assert job_counts(workdir, repo_root) == {}
    assert planned(workdir, repo_root) == {}
    return workdir


def per_group(plan):
    return {rule: plan[rule] for rule in PER_GROUP if rule in plan}


def test_training_parameter_reruns_no_descriptor_job(built, repo_root):
    cfg = copy.deepcopy(CONFIG)
    cfg["reference"] = dict(reversed(cfg["reference"].items()))  # reordered keys change nothing
    cfg["pytorch"].update({"learning_rate": 5.0e-4, "num_epochs": 7, "batch_size": 2})
    cfg["groups"]["Volume_BCC"]["eweight"] = 0.5
    cfg["groups"]["Surface_100"] = {"training_size": 0.5, "testing_size": 0.5}
    write_config(built, cfg)
    try:
        counts = job_counts(built, repo_root)
        assert counts["train"] == 1, counts  # the fit and what follows it do rerun
        assert not set(PER_GROUP) & set(counts), counts
        assert per_group(planned(built, repo_root)) == {}
    finally:
        write_config(built, CONFIG)


def test_descriptor_setting_reruns_every_descriptor_job(built, repo_root):
    cfg = copy.deepcopy(CONFIG)
    cfg["bispectrum"] = {"rcutfac": 4.5}
    write_config(built, cfg)
    try:
        counts = job_counts(built, repo_root)
        assert counts["compute_descriptors"] == len(GROUPS) and "import_group" not in counts, counts
        assert counts["train"] == 1, counts
        assert per_group(planned(built, repo_root)) == {"compute_descriptors": set(GROUPS)}
    finally:
        write_config(built, CONFIG)


def test_editing_one_group_reruns_only_that_group(built, repo_root):
    # runs last in this module: it leaves the edited group out of date
    path = built / "data" / "Surface_100.xyz"
    frames = ase.io.read(path, index=":")
    frames[1].positions[0, 0] += 0.01
    time.sleep(0.01)
    ase.io.write(path, frames, format="extxyz")
    counts = job_counts(built, repo_root)
    assert counts["import_group"] == 1 and counts["compute_descriptors"] == 1, counts
    assert counts["train"] == 1, counts  # aggregates over groups rerun too
    assert per_group(planned(built, repo_root)) == {
        "import_group": {"Surface_100"},
        "compute_descriptors": {"Surface_100"},
    }
