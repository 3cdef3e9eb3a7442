# potflow: fit a neural-network interatomic potential on LAMMPS descriptors.
# This file validates the config, includes one rule file per stage and names the targets.
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

# A FitSNAP input file (`--config fitsnap_input=Ta.in`) is the whole config; other --config
# values override it. A --configfile is the whole config too (not merged into config.yaml's
# example, whose groups it would inherit). Without either, config.yaml is read.
if config.get("fitsnap_input"):
    sys.path.insert(0, workflow.basedir)
    from potflow.config.fitsnap import workflow_config

    workflow_config(config)
elif not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# potflow's own check first: a bad config ends with one line naming its file and field.
sys.path.insert(0, workflow.current_basedir.get_path_or_uri(secret_free=True))
from potflow.config.load import check_workflow_config

check_workflow_config(config, workflow.configfiles)
validate(config, "schemas/config.schema.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    group=r"[^/]+",
    fit=r"[^/]+",
    dkey=r"[0-9a-f]{12}",


include: "rules/data.smk"
include: "rules/descriptors.smk"
include: "rules/training.smk"
include: "rules/evaluation_common.smk"
include: "rules/evaluation.smk"
include: "rules/export.smk"
include: "rules/md.smk"
include: "rules/committee.smk"
include: "rules/sweeps.smk"


rule all:
    default_target: True
    input:
        all_targets(),
