# potflow: fit a neural-network interatomic potential on LAMMPS descriptors.
# This file validates the config, includes one rule file per stage and names the targets.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/descriptors.smk"
include: "rules/evaluation_common.smk"
include: "rules/evaluation.smk"


rule all:
    input:
        all_targets(),
    default_target: True
