"""Properties rules: one kind of property of every crystal, then the table and figures."""

import os

from potflow.workflow.rulescript import rule_step, run_rule

sm = snakemake  # noqa: F821
os.environ.setdefault("OMP_NUM_THREADS", "1")


def property_kind():
    from potflow.properties.stage import compute_kind

    compute_kind(
        sm.params.config,
        sm.wildcards.kind,
        os.path.dirname(sm.input.record),
        sm.output[0],
        eos_group_files=list(sm.input.eos_groups),
        member_models=list(sm.input.members),
    )


def properties_table():
    from potflow.properties.stage import write_table

    outputs = {k: sm.output[k] for k in ("table", "html", "eos_plot", "phonon_plot")}
    write_table(sm.params.config, sm.wildcards.fit, list(sm.input), outputs)


STEPS = {"property_kind": property_kind, "properties_table": properties_table}
run_rule(rule_step(sm.rule, STEPS), sm.log[0])
