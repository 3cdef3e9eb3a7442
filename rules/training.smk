# Training: one network per fit, on the descriptors of the training groups.

# The sections a fit depends on, as canonical JSON (params): editing md, outfile or test_sets,
# or reordering keys, keeps the fit.
TRAINING_SECTIONS = (
    "bispectrum",
    "calculator",
    "reference",
    "descriptors",
    "eshift",
    "groups",
    "pytorch",
    "solver",
    "ridge",
)
# FitSNAP's pytorch.save_state_output: the same for every fit (the config check refuses it in a fit)
CHECKPOINT = POTFLOW["pytorch"]["save_state_output"]


rule train:
    """Fit the network on the training groups' descriptors (FitSNAP's [PYTORCH] settings),
    or solve the linear SNAP fit (solver SVD or RIDGE: no epochs, no GPU).

    The running state is kept in resume.pt beside the outputs, which Snakemake does not
    delete: rerunning the rule after an interruption continues from the last saved epoch.
    """
    input:
        descriptors=lambda w: descriptor_dirs(w.fit),
    output:
        model=layout.model("{fit}"),
        checkpoint=layout.checkpoint("{fit}", CHECKPOINT),
        loss=layout.loss_history("{fit}"),
        split=layout.split("{fit}"),
    log:
        layout.training_log("{fit}"),
    benchmark:
        layout.training_benchmark("{fit}")
    conda:
        "../envs/potflow.yaml"
    # resources.train_gpus > 1: one training process per GPU, started by torchrun
    threads: max(1, POTFLOW["resources"]["train_gpus"])
    resources:
        gpu=lambda w: (
            0
            if pfconfig.is_linear(FITS[w.fit])
            else POTFLOW["resources"]["train_gpus"]
        ),
        mem_mb=lambda w: max(1, POTFLOW["resources"]["train_gpus"])
        * (1500 + (FITS[w.fit]["pytorch"]["memory_budget_mb"] or 8000)),
    params:
        settings=lambda w: canonical_json(
            {k: FITS[w.fit][k] for k in TRAINING_SECTIONS}
        ),
        resume=lambda w: layout.resume_state(w.fit),
    script:
        "../workflow_scripts/training.py"
