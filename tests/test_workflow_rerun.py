"""Snakemake reruns only what changed: shown with Snakemake's own dry run and summary."""

import copy
import os
import time

import ase.io
import pytest
import yaml
from workflow_runs import job_counts, run_workflow

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


def snakemake(workdir, *args):
    return run_workflow(workdir, *args).stdout


def planned(workdir):
    """{rule: set of groups whose output Snakemake would (re)make}, from ``--summary``."""
    lines = snakemake(workdir, "--summary").splitlines()
    header = lines.index(next(line for line in lines if line.startswith("output_file\t")))
    plan = {}
    for line in lines[header + 1 :]:
        fields = line.split("\t")
        output, rule, status = fields[0], fields[2], fields[-1]
        if status != "no update":
            group = os.path.basename(output).removesuffix(".npz")
            plan.setdefault(rule, set()).add(group)
    return plan


def planned_job_counts(workdir):
    """Job counts per rule of the dry run (``-n --quiet rules``); {} when nothing is to be done."""
    return job_counts(snakemake(workdir, "--dry-run", "--quiet", "rules"))


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
    snakemake(workdir, "--cores", "2", "--quiet", "all")
    assert planned_job_counts(workdir) == {}
    assert planned(workdir) == {}
    return workdir


def per_group(plan):
    return {rule: plan[rule] for rule in PER_GROUP if rule in plan}


@pytest.mark.slow  # end to end: runs the workflow
def test_training_parameter_reruns_no_descriptor_job(built, repo_root):
    cfg = copy.deepcopy(CONFIG)
    cfg["reference"] = dict(reversed(cfg["reference"].items()))  # reordered keys change nothing
    cfg["pytorch"].update({"learning_rate": 5.0e-4, "num_epochs": 7, "batch_size": 2})
    cfg["groups"]["Volume_BCC"]["eweight"] = 0.5
    cfg["groups"]["Surface_100"] = {"training_size": 0.5, "testing_size": 0.5}
    write_config(built, cfg)
    try:
        counts = planned_job_counts(built)
        assert counts["train"] == 1, counts  # the fit and what follows it do rerun
        assert not set(PER_GROUP) & set(counts), counts
        assert per_group(planned(built)) == {}
    finally:
        write_config(built, CONFIG)


@pytest.mark.slow  # end to end: runs the workflow
def test_descriptor_setting_reruns_every_descriptor_job(built, repo_root):
    cfg = copy.deepcopy(CONFIG)
    cfg["bispectrum"] = {"rcutfac": 4.5}
    write_config(built, cfg)
    try:
        counts = planned_job_counts(built)
        assert counts["compute_descriptors"] == len(GROUPS) and "import_group" not in counts, counts
        assert counts["train"] == 1, counts
        assert per_group(planned(built)) == {"compute_descriptors": set(GROUPS)}
    finally:
        write_config(built, CONFIG)


@pytest.mark.slow  # end to end: runs the workflow
def test_editing_one_group_reruns_only_that_group(built, repo_root):
    # runs last in this module: it leaves the edited group out of date
    path = built / "data" / "Surface_100.xyz"
    frames = ase.io.read(path, index=":")
    frames[1].positions[0, 0] += 0.01
    time.sleep(0.01)
    ase.io.write(path, frames, format="extxyz")
    counts = planned_job_counts(built)
    assert counts["import_group"] == 1 and counts["compute_descriptors"] == 1, counts
    assert counts["train"] == 1, counts  # aggregates over groups rerun too
    assert per_group(planned(built)) == {
        "import_group": {"Surface_100"},
        "compute_descriptors": {"Surface_100"},
    }


@pytest.mark.slow  # end to end: runs the first two stages
def test_editing_one_json_file_reruns_only_its_group(tmp_path, shared_data):
    """A JSON group is one input path (its folder) plus a stamp of its files' names, sizes and
    times (the import job's params.files): an edit in place of one file, which leaves the
    folder's time as it was, reruns that group's import and descriptors and nothing else of
    those stages. Fails when the stamp is left out of the import job's params (checked: then
    nothing is planned)."""
    from tiny_ta import copy_tiny_groups, tiny_config

    copy_tiny_groups(shared_data, tmp_path / "data", {"Liquid": 1, "Volume_FCC": 2})
    cfg = {**tiny_config(), "md": {"enabled": False}, "properties": {"enabled": False}}
    write_config(tmp_path, cfg)
    until = ("--until", "compute_descriptors")
    snakemake(tmp_path, "--cores", "2", "--quiet", *until)
    assert job_counts(snakemake(tmp_path, "--dry-run", "--quiet", "rules", *until)) == {}
    edited = sorted((tmp_path / "data" / "Volume_FCC").glob("*.json"))[0]
    folder_time = (tmp_path / "data" / "Volume_FCC").stat().st_mtime_ns
    with open(edited, "a") as fh:  # in place: the folder's time does not change
        fh.write(" ")
    assert (tmp_path / "data" / "Volume_FCC").stat().st_mtime_ns == folder_time
    counts = job_counts(snakemake(tmp_path, "--dry-run", "--quiet", "rules", *until))
    assert counts == {"import_group": 1, "compute_descriptors": 1}, counts
    assert per_group(planned(tmp_path)) == {"import_group": {"Volume_FCC"}, "compute_descriptors": {"Volume_FCC"}}
