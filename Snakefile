# potflow: fit a neural-network interatomic potential on LAMMPS descriptors.
# This file validates the config, includes one rule file per stage and names the targets.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"


wildcard_constraints:
    group=r"[^/]+",
    fit=r"[^/]+",
    dkey=r"[0-9a-f]{12}",


include: "rules/data.smk"
include: "rules/descriptors.smk"
include: "rules/export.smk"
include: "rules/md.smk"


rule all:
    default_target: True
    input:
        all_targets(),
