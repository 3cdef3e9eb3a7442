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
from potflow.config.load import SCHEMA_PATH, check_workflow_config
from potflow.config.sweeps import check_workflow_fits

check_workflow_config(config, workflow.configfiles)
check_workflow_fits(config, workflow.configfiles)
# the schema the package ships (schemas/config.schema.yaml links to it): a local file also
# when this workflow is used as a module from a remote source
validate(config, str(SCHEMA_PATH))


report: "report/workflow.rst"


# One rule file per stage (each uses only what the files above it define): rules/<stage>.smk
# runs workflow_scripts/<stage>.py, which calls the stage's package in potflow/. Every path of
# an output or a log comes from potflow/workflow/layout.py.
include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/descriptors.smk"
include: "rules/training.smk"
include: "rules/committee.smk"
include: "rules/evaluation.smk"
include: "rules/export.smk"
include: "rules/md.smk"
include: "rules/properties.smk"
include: "rules/sweeps.smk"


# On Slurm, before the first sbatch: GPU jobs on a cluster without GPUs, or jobs larger than
# every node, stop the run in one line (sbatch would refuse them, or Slurm keep them pending).
onstart:
    from potflow.workflow.slurm import check_jobs_before_submitting

    check_jobs_before_submitting(
        workflow, pfconfig.config_source(workflow.configfiles)
    )


rule all:
    default_target: True
    input:
        # descriptors of every group, once per descriptor settings (fits may share them)
        [layout.descriptors(g, key) for key in DESCRIPTOR_SETTINGS for g in GROUPS],
        # every fit; its evaluation and loss curves; its evaluation on every test set
        [layout.model(fit) for fit in FITS],
        [
            layout.evaluation_files(layout.evaluation(fit, t), METRICS, cfg["extras"])
            for fit, cfg in FITS.items()
            for t in [None, *TEST_SETS]
        ],
        [
            layout.plot(f, layout.LOSS_FIGURE, x)
            for f in FITS
            for x in layout.FIGURE_FORMATS
        ],
        # the exported potential (LAMMPS runs only the activations it knows) and its MD run
        [
            exported(fit, "record")
            for fit, cfg in FITS.items()
            if cfg["pytorch"]["activation"] in pfconfig.LAMMPS_ACTIVATIONS
        ],
        # a linear fit also as FitSNAP's pair_style snap files
        [
            exported_snap(fit, "record")
            for fit, cfg in FITS.items()
            if pfconfig.is_linear(cfg)
        ],
        [
            layout.md_file(fit, "summary")
            for fit, cfg in FITS.items()
            if cfg["md"]["enabled"]
        ],
        # the material properties of every exported fit beside their references
        [
            layout.properties_file(fit, "table")
            for fit in FITS
            if fit_property_kinds(fit)
        ],
        # several fits: the fits table and the leaderboard
        [layout.fits_table(ext) for ext in ("tsv", "yaml") if len(FITS) > 1],
        [layout.leaderboard(ext) for ext in layout.LEADERBOARD_FORMATS if len(FITS) > 1],
        # committees: the uncertainty of every evaluation, the disagreement along the MD run
        [
            layout.committee_files(fit, TEST_SETS, cfg["md"]["enabled"])
            for fit, cfg in FITS.items()
            if pfsweeps.committee_size(cfg) > 1
        ],
