# Helpers shared by all stages: the checked config, group discovery and result paths.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from potflow import config as pfconfig
from potflow.resources import descriptor_job_resources

POTFLOW = pfconfig.prepare_config(config, source="config")
RESULTS = "results"
DATA_DIR, SCRAPER = pfconfig.data_source(POTFLOW)
GROUPS = pfconfig.fit_groups(POTFLOW)
DESCRIPTOR_KEY = pfconfig.descriptor_key(POTFLOW)
# One fit for now; a sweep (issue 9) maps several fit names to their own configs.
FITS = {"default": POTFLOW}


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


def all_targets():
    return [descriptor_dir(g) for g in GROUPS]
