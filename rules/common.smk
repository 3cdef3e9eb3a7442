# Helpers shared by all stages: the checked config, group discovery and result paths.
import os
import sys
from pathlib import Path

# potflow's own checkout, also when another workflow uses potflow as a module: there
# workflow.basedir is the caller's folder, while current_basedir is this file's (rules/).
POTFLOW_ROOT = str(
    Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parent
)
sys.path.insert(0, POTFLOW_ROOT)
# Jobs run Python in new processes (shell commands, conda envs, cluster nodes): set, not
# require, PYTHONPATH so that they import this same package, installed or not.
_pythonpath = os.environ.get("PYTHONPATH", "").split(os.pathsep)
if _pythonpath[0] != POTFLOW_ROOT:
    os.environ.update(
        PYTHONPATH=os.pathsep.join(filter(None, [POTFLOW_ROOT, *_pythonpath]))
    )

from potflow.config import groups as pfgroups
from potflow.config import load as pfconfig
from potflow.config import sweeps as pfsweeps
from potflow.descriptors.job_resources import descriptor_job_resources
from potflow.descriptors.settings import descriptor_key, descriptor_settings
from potflow.hashing import canonical_json

POTFLOW = pfconfig.prepare_config(config, source="config")
RESULTS = "results"
DATA_DIR, SCRAPER = pfgroups.data_source(POTFLOW)
GROUPS = pfgroups.fit_groups(POTFLOW)
DESCRIPTOR_KEY = descriptor_key(POTFLOW)
# fit name -> that fit's checked config: one fit, "default", unless the config has a
# `fits:` map or a `sweep:` grid (potflow/sweeps.py)
FITS = pfsweeps.expand_fits(POTFLOW, source="config")
# Fits with equal descriptor settings share one descriptor computation per group.
DESCRIPTOR_SETTINGS = {
    descriptor_key(cfg): descriptor_settings(cfg) for cfg in FITS.values()
}


def group_input_files(wildcards):
    """The raw files of one group, so editing one file reruns only that group."""
    source = pfgroups.group_source(DATA_DIR, SCRAPER, wildcards.group)
    if SCRAPER == "JSON":
        return sorted(str(p) for p in source.glob("*.json"))
    return [str(source)]


def imported(group):
    return f"{RESULTS}/data/{group}.npz"


def descriptor_dir(group, key=DESCRIPTOR_KEY):
    return f"{RESULTS}/descriptors/{key}/{group}"


def descriptor_mem_mb(wildcards, input, attempt):
    """Memory (MB) of one group's descriptor job, from its atom counts; doubled on a retry."""
    return attempt * descriptor_job_resources(input[0], POTFLOW)["mem_mb"]


def descriptor_runtime(wildcards, input, attempt):
    """Wall time (minutes) of one group's descriptor job; doubled on a retry."""
    return attempt * descriptor_job_resources(input[0], POTFLOW)["runtime"]


def fit_dir(fit):
    return f"{RESULTS}/fits/{fit}"


def fit_descriptor_dirs(wildcards):
    """Descriptor folders of every training group, for the settings of this fit."""
    cfg = FITS[wildcards.fit]
    return [descriptor_dir(g, descriptor_key(cfg)) for g in GROUPS]


def exported(fit, suffix):
    """An exported LAMMPS/TorchScript file of a fit (suffix .mod, .mliap.model, ...)."""
    return f"{fit_dir(fit)}/lammps/{FITS[fit]['outfile']['potential']}{suffix}"


def md_potential_files(wildcards):
    """The exported files the MD validation of a fit runs."""
    return {
        "include": exported(wildcards.fit, ".mod"),
        "network": exported(wildcards.fit, ".mliap.model"),
        "descriptor": exported(wildcards.fit, ".mliap.descriptor"),
    }


def committee_members(fit):
    """Member numbers 1..N-1 of a fit's committee (member 0 is the fit's own model.pt)."""
    return range(1, pfsweeps.committee_size(FITS[fit]))


def member_dir(fit, member):
    return f"{fit_dir(fit)}/committee/member{member}"


def committee_member_models(wildcards):
    return [
        f"{member_dir(wildcards.fit, k)}/model.pt"
        for k in committee_members(wildcards.fit)
    ]


def committee_member_splits(wildcards):
    return [
        f"{member_dir(wildcards.fit, k)}/split.tsv"
        for k in committee_members(wildcards.fit)
    ]


def all_targets():
    keys = dict.fromkeys(descriptor_key(c) for c in FITS.values())
    targets = [descriptor_dir(g, key) for key in keys for g in GROUPS]
    targets += [f"{fit_dir(fit)}/model.pt" for fit in FITS]
    targets += all_evaluation_targets()
    # LAMMPS runs only the activations it knows (config.py warns about the others)
    targets += [
        exported(f, ".export.json")
        for f, c in FITS.items()
        if c["pytorch"]["activation"] in pfconfig.LAMMPS_ACTIVATIONS
    ]
    targets += [
        f"{fit_dir(f)}/md/summary.json" for f, c in FITS.items() if c["md"]["enabled"]
    ]
    targets += sweep_targets() + committee_targets()
    return targets


# Sweeps and committees (rules/sweeps.smk, rules/committee.smk).


def leaderboard_sources():
    """fit -> the files its leaderboard row is read from (None where there is no such file)."""
    sources = {}
    for fit, cfg in FITS.items():
        members = committee_members(fit)
        md = cfg["md"]["enabled"]
        sources[fit] = {
            "metrics": f"{fit_dir(fit)}/{METRICS}",
            "model": f"{fit_dir(fit)}/model.pt",
            "members": [f"{member_dir(fit, k)}/model.pt" for k in members],
            # Snakemake's benchmark files of the training jobs (rules/training.smk)
            "benchmarks": [
                f"{RESULTS}/logs/fits/{fit}/{sub}train_benchmark.tsv"
                for sub in ["", *(f"committee/member{k}/" for k in members)]
            ],
            "md_summary": f"{fit_dir(fit)}/md/summary.json" if md else None,
            "md_committee": (
                f"{fit_dir(fit)}/md/committee.json" if md and members else None
            ),
        }
    return sources


def leaderboard_inputs(wildcards):
    files = []
    for src in leaderboard_sources().values():
        files += [src["metrics"], src["model"], src["md_summary"], src["md_committee"]]
        # a benchmark file is written by its training job: depend on that job's model
        files += src["members"]
    return sorted(set(f for f in files if f))


def sweep_targets():
    if len(FITS) < 2:
        return []
    return [f"{RESULTS}/fits.tsv", f"{RESULTS}/fits.yaml"] + [
        f"{RESULTS}/leaderboard/leaderboard.{ext}"
        for ext in ("tsv", "md", "html", "png", "pdf")
    ]


def committee_targets():
    targets = []
    for fit, cfg in FITS.items():
        if pfsweeps.committee_size(cfg) < 2:
            continue
        folders = [fit_dir(fit)] + [test_set_dir(fit, t) for t in TEST_SETS]
        targets += [
            f"{d}/plots/committee_uncertainty.{ext}"
            for d in folders
            for ext in ("png", "pdf")
        ]
        if cfg["md"]["enabled"]:
            targets += [
                f"{fit_dir(fit)}/md/{name}"
                for name in ("committee.tsv", "candidates.extxyz", "committee.json")
            ]
    return targets
