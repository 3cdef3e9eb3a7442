# Shared by all stages: the checked config, the fits, the groups and their data. Every path
# of an output or a log comes from potflow/workflow/layout.py (`layout`).
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
from potflow.descriptors.settings import descriptor_key, descriptor_settings
from potflow.errors import PotflowInputError
from potflow.hashing import canonical_json
from potflow.workflow import layout

POTFLOW = pfconfig.prepare_config(config, source="config")
DATA_DIR, SCRAPER = pfgroups.data_source(POTFLOW)
GROUPS = pfgroups.fit_groups(POTFLOW)
# fit name -> that fit's checked config: one fit, "default", unless the config has a
# `fits:` map or a `sweep:` grid (potflow/config/sweeps.py)
FITS = pfsweeps.expand_fits(POTFLOW, source="config")
# Fits with equal descriptor settings share one descriptor computation per group.
DESCRIPTOR_SETTINGS = {
    descriptor_key(cfg): descriptor_settings(cfg) for cfg in FITS.values()
}
# test set name -> (data directory, scraper); its groups are scored, never trained on
TEST_SETS = {
    name: (Path(ts["dataPath"]), ts.get("scraper", SCRAPER))
    for name, ts in POTFLOW["test_sets"].items()
}
for _name, (_dir, _) in TEST_SETS.items():
    if _dir.resolve() == DATA_DIR.resolve():
        raise PotflowInputError(
            "config",
            f"field 'test_sets.{_name}.dataPath' is the training data (path.dataPath)",
        )
TEST_GROUPS = {name: pfgroups.discover_groups(*src) for name, src in TEST_SETS.items()}


wildcard_constraints:
    group=layout.NAME,
    fit=layout.NAME,
    test_set=layout.NAME,
    dkey=layout.DESCRIPTOR_KEY,
    member=layout.MEMBER,
    evaluation=layout.EVALUATION,
    potential=layout.NAME,


def data_source(test_set=None):
    """(directory, scraper) of the training data, or of a test set."""
    return (DATA_DIR, SCRAPER) if test_set is None else TEST_SETS[test_set]


def groups_of(test_set=None):
    """The groups of the training data, or of a test set."""
    return GROUPS if test_set is None else TEST_GROUPS[test_set]


def group_source(wildcards):
    """A group's folder (JSON) or file (XYZ), in the training data or in a test set."""
    return pfgroups.group_source(
        *data_source(wildcards.get("test_set")), wildcards.group
    )


def group_input_files(wildcards):
    """The raw input of one group: its XYZ file, or its JSON folder (whose files the import
    job's params.files stamps, so editing one file reruns only that group)."""
    return [str(group_source(wildcards))]


def group_files_stamp(wildcards):
    """A JSON group's files (names, sizes, times) as one string; "" for an XYZ file (its own
    input). See potflow.config.groups.group_files_stamp."""
    if data_source(wildcards.get("test_set"))[1] != "JSON":
        return ""
    return pfgroups.group_files_stamp(group_source(wildcards))


def descriptor_dirs(fit, test_set=None):
    """The descriptor folders a fit trains on (or scores, of a test set): its settings' key."""
    key = descriptor_key(FITS[fit])
    return [layout.descriptors(g, key, test_set) for g in groups_of(test_set)]


def structure_files(test_set=None):
    """The imported structures of every group of the training data, or of a test set."""
    return [layout.structures(g, test_set) for g in groups_of(test_set)]
