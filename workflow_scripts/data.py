"""Data rules (import_group, import_test_group): one group's raw files into a canonical file."""

from potflow.data.structures import import_group
from potflow.workflow.rulescript import run_rule

sm = snakemake  # noqa: F821


def body():
    p = sm.params
    import_group(p.source, p.scraper, p.elements, sm.output[0], p.min_distance)


run_rule(body, sm.log[0])
