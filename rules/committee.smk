# Committees (committee.members > 1): the other members' training jobs, the uncertainty figure
# of every evaluation, and the committee's disagreement along the MD run. Member 0 is the fit's
# own training job (model.pt); members 1..N-1 train in results/fits/{fit}/committee/member{k}/.


wildcard_constraints:
    member=r"[1-9][0-9]*",


use rule train as train_member with:
    output:
        model=f"{RESULTS}/fits/{{fit}}/committee/member{{member}}/model.pt",
        checkpoint=f"{RESULTS}/fits/{{fit}}/committee/member{{member}}/{POTFLOW['pytorch']['save_state_output']}",
        loss=f"{RESULTS}/fits/{{fit}}/committee/member{{member}}/loss_vs_epochs.dat",
        split=f"{RESULTS}/fits/{{fit}}/committee/member{{member}}/split.tsv",
    log:
        f"{RESULTS}/fits/{{fit}}/committee/member{{member}}/training.log",
    benchmark:
        f"{RESULTS}/logs/fits/{{fit}}/committee/member{{member}}/train_benchmark.tsv"
    params:
        # the fit's training settings with the member's seed (the only difference)
        settings=lambda w: canonical_json(
            {
                k: pfsweeps.member_config(FITS[w.fit], int(w.member))[k]
                for k in TRAINING_SECTIONS
            }
        ),
        resume=lambda w: f"{member_dir(w.fit, w.member)}/resume.pt",


rule plot_committee:
    """Error of the committee mean against the committee's spread (PNG for the report, PDF)."""
    input:
        "{evaldir}/evaluation.npz",
    output:
        png=report(
            "{evaldir}/plots/committee_uncertainty.png",
            caption="../report/committee_uncertainty.rst",
            category="{evaldir}",
            labels={"figure": "committee uncertainty"},
        ),
        pdf="{evaldir}/plots/committee_uncertainty.pdf",
    log:
        "{evaldir}/logs/committee_uncertainty.log",
    conda:
        "../envs/potflow.yaml"
    params:
        title=evaluation_title,
    script:
        "../workflow_scripts/committee.py"


rule md_committee:
    """The committee's force disagreement on the MD frames; frames above the threshold as extxyz."""
    input:
        model=f"{RESULTS}/fits/{{fit}}/model.pt",
        members=committee_member_models,
        trajectory=f"{RESULTS}/fits/{{fit}}/md/trajectory.extxyz",
    output:
        table=f"{RESULTS}/fits/{{fit}}/md/committee.tsv",
        candidates=f"{RESULTS}/fits/{{fit}}/md/candidates.extxyz",
        summary=f"{RESULTS}/fits/{{fit}}/md/committee.json",
        plot=report(
            f"{RESULTS}/fits/{{fit}}/md/committee_disagreement.png",
            caption="../report/md_committee.rst",
            category="MD validation",
            labels={"fit": "{fit}", "figure": "committee disagreement"},
        ),
    log:
        f"{RESULTS}/logs/md/{{fit}}.committee.log",
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        config=lambda w: FITS[w.fit],
        title=lambda w: f"fit {w.fit}: committee along the MD run",
    script:
        "../workflow_scripts/committee.py"
