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
)


rule train:
    """Fit the network on the training groups' descriptors (FitSNAP's [PYTORCH] settings).

    The running state is kept in resume.pt beside the outputs, which Snakemake does not
    delete: rerunning the rule after an interruption continues from the last saved epoch.
    """
    input:
        descriptors=fit_descriptor_dirs,
    output:
        model=f"{RESULTS}/fits/{{fit}}/model.pt",
        checkpoint=f"{RESULTS}/fits/{{fit}}/{POTFLOW['pytorch']['save_state_output']}",
        loss=f"{RESULTS}/fits/{{fit}}/loss_vs_epochs.dat",
        split=f"{RESULTS}/fits/{{fit}}/split.tsv",
    log:
        f"{RESULTS}/fits/{{fit}}/training.log",
    benchmark:
        f"{RESULTS}/logs/fits/{{fit}}/train_benchmark.tsv"
    conda:
        "../envs/potflow.yaml"
    # resources.train_gpus > 1: one training process per GPU, started by torchrun
    threads: max(1, POTFLOW["resources"]["train_gpus"])
    resources:
        gpu=POTFLOW["resources"]["train_gpus"],
        mem_mb=lambda w: max(1, POTFLOW["resources"]["train_gpus"])
        * (1500 + (FITS[w.fit]["pytorch"]["memory_budget_mb"] or 8000)),
    params:
        settings=lambda w: canonical_json(
            {k: FITS[w.fit][k] for k in TRAINING_SECTIONS}
        ),
        resume=lambda w: f"{fit_dir(w.fit)}/resume.pt",
    script:
        "../workflow_scripts/train.py"
