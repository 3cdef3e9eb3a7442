# Properties: material properties of each fit's exported potential (properties.crystals),
# computed in LAMMPS through ASE and phonopy, one job per fit and kind of property (eos,
# elastic, defects, surfaces, phonons), then the table and figures beside the references.


# The kinds of property a fit's crystals ask for (none: no properties stage for this fit, or
# an activation LAMMPS cannot run, so no exported potential).
fit_property_kinds = lambda fit: [
    kind
    for kind in layout.PROPERTY_KINDS
    if FITS[fit]["properties"]["enabled"]
    and FITS[fit]["pytorch"]["activation"] in pfconfig.LAMMPS_ACTIVATIONS
    and any(kind in c["compute"] for c in FITS[fit]["properties"]["crystals"].values())
]
# The training groups whose equation of state is compared (properties.eos_groups).
eos_group_files = lambda w: (
    [layout.structures(g) for g in FITS[w.fit]["properties"]["eos_groups"]]
    if w.kind == "eos"
    else []
)


wildcard_constraints:
    kind="|".join(layout.PROPERTY_KINDS),


# A bad crystal (element, lattice, structure file) stops the workflow before anything runs
# (checked once per set of crystals; where Snakemake's own environment has no ASE
# (--use-conda), the jobs check instead).
from potflow.properties.structures import check_crystals_once

for _fit in FITS:
    if fit_property_kinds(_fit):
        check_crystals_once(FITS[_fit], layout.PARSE_CHECKS)


rule property_kind:
    """One kind of property of every crystal: the exported fit, the reference potential and the
    committee members, each run in LAMMPS through ASE."""
    input:
        record=lambda w: exported(w.fit, "record"),
        include=lambda w: exported(w.fit, "include"),
        network=lambda w: exported(w.fit, "model"),
        descriptor=lambda w: exported(w.fit, "descriptor"),
        eos_groups=eos_group_files,
        members=committee_member_models,
    output:
        layout.property_result("{fit}", "{kind}"),
    log:
        layout.properties_log("{fit}", "{kind}"),
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        config=lambda w: FITS[w.fit],
    script:
        "../workflow_scripts/properties.py"


rule properties_table:
    """The properties beside their references (tsv, html), the equation-of-state and phonon
    figures; a missed tolerance fails the job only with properties.fail_on_tolerance."""
    input:
        lambda w: [layout.property_result(w.fit, k) for k in fit_property_kinds(w.fit)],
    output:
        table=layout.properties_file("{fit}", "table"),
        html=report(
            layout.properties_file("{fit}", "html"),
            caption="../report/properties_table.rst",
            category="Properties",
            labels={"fit": "{fit}", "figure": "properties table"},
        ),
        eos_plot=report(
            layout.properties_file("{fit}", "eos_plot"),
            caption="../report/properties_eos.rst",
            category="Properties",
            labels={"fit": "{fit}", "figure": "equation of state"},
        ),
        phonon_plot=report(
            layout.properties_file("{fit}", "phonon_plot"),
            caption="../report/properties_phonons.rst",
            category="Properties",
            labels={"fit": "{fit}", "figure": "phonons"},
        ),
    log:
        layout.properties_log("{fit}", "table"),
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        config=lambda w: FITS[w.fit],
    script:
        "../workflow_scripts/properties.py"
