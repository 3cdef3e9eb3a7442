# Committees (committee.members > 1): the other members' training jobs, the uncertainty figure
# of every evaluation, and the committee's disagreement along the MD run. Member 0 is the fit's
# own training job (model.pt); members 1..N-1 train in folders of their own (layout.training_dir).


# Member numbers 1..N-1 of a fit's committee (member 0 is the fit's own model.pt).
committee_members = lambda fit: range(1, pfsweeps.committee_size(FITS[fit]))
# Input functions: the other members' models and splits (none without a committee).
committee_member_models = lambda w: [
    layout.model(w.fit, k) for k in committee_members(w.fit)
]
committee_member_splits = lambda w: [
    layout.split(w.fit, k) for k in committee_members(w.fit)
]


use rule train as train_member with:
    output:
        model=layout.model("{fit}", "{member}"),
        checkpoint=layout.checkpoint("{fit}", CHECKPOINT, "{member}"),
        loss=layout.loss_history("{fit}", "{member}"),
        split=layout.split("{fit}", "{member}"),
    log:
        layout.training_log("{fit}", "{member}"),
    benchmark:
        layout.training_benchmark("{fit}", "{member}")
    params:
        # the fit's training settings with the member's seed (the only difference)
        settings=lambda w: canonical_json(
            {
                k: pfsweeps.member_config(FITS[w.fit], int(w.member))[k]
                for k in TRAINING_SECTIONS
            }
        ),
        resume=lambda w: layout.resume_state(w.fit, w.member),


rule plot_committee:
    """Error of the committee mean against the committee's spread (PNG for the report, PDF)."""
    input:
        layout.predictions("{evaluation}"),
    output:
        png=report(
            layout.plot("{evaluation}", layout.COMMITTEE_FIGURE, "png"),
            caption="../report/committee_uncertainty.rst",
            category=layout.evaluation_dir("{evaluation}"),
            labels={"figure": "committee uncertainty"},
        ),
        pdf=layout.plot("{evaluation}", layout.COMMITTEE_FIGURE, "pdf"),
    log:
        layout.committee_log("{evaluation}", layout.COMMITTEE_FIGURE),
    conda:
        "../envs/potflow.yaml"
    params:
        title=lambda w: layout.evaluation_title(w.evaluation),
    script:
        "../workflow_scripts/committee.py"


rule md_committee:
    """The committee's force disagreement on the MD frames; frames above the threshold as extxyz."""
    input:
        model=layout.model("{fit}"),
        members=committee_member_models,
        trajectory=layout.md_file("{fit}", "trajectory"),
    output:
        table=layout.md_committee_file("{fit}", "table"),
        candidates=layout.md_committee_file("{fit}", "candidates"),
        summary=layout.md_committee_file("{fit}", "summary"),
        plot=report(
            layout.md_committee_file("{fit}", "plot"),
            caption="../report/md_committee.rst",
            category="MD validation",
            labels={"fit": "{fit}", "figure": "committee disagreement"},
        ),
    log:
        layout.committee_log("{fit}", "md"),
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        config=lambda w: FITS[w.fit],
        title=lambda w: f"fit {w.fit}: committee along the MD run",
    script:
        "../workflow_scripts/committee.py"
