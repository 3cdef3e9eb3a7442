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

from potflow import config as pfconfig
from potflow.resources import descriptor_job_resources

POTFLOW = pfconfig.prepare_config(config, source="config")
RESULTS = "results"
DATA_DIR, SCRAPER = pfconfig.data_source(POTFLOW)
GROUPS = pfconfig.fit_groups(POTFLOW)
DESCRIPTOR_KEY = pfconfig.descriptor_key(POTFLOW)
# One fit for now; a sweep (issue 9) maps several fit names to their own configs.
FITS = {"default": POTFLOW}
# Fits with equal descriptor settings share one descriptor computation per group.
DESCRIPTOR_SETTINGS = {
    pfconfig.descriptor_key(cfg): pfconfig.descriptor_settings(cfg)
    for cfg in FITS.values()
}


def group_input_files(wildcards):
    """The raw files of one group, so editing one file reruns only that group."""
    source = pfconfig.group_source(DATA_DIR, SCRAPER, wildcards.group)
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
    return [descriptor_dir(g, pfconfig.descriptor_key(cfg)) for g in GROUPS]


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


def all_targets():
    targets = [descriptor_dir(g) for g in GROUPS]
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
    return targets
