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
        loss=report(
            f"{RESULTS}/fits/{{fit}}/loss_vs_epochs.dat",
            caption="../report/loss_vs_epochs.rst",
            category="Training",
        ),
        split=f"{RESULTS}/fits/{{fit}}/split.tsv",
    log:
        f"{RESULTS}/fits/{{fit}}/training.log",
    conda:
        "../envs/potflow.yaml"
    threads: 1
    resources:
        gpu=POTFLOW["resources"]["train_gpus"],
    params:
        config=lambda w: FITS[w.fit],
        resume=lambda w: f"{fit_dir(w.fit)}/resume.pt",
    script:
        "../workflow_scripts/train.py"
