"""Benchmark: the material properties of the bundled example's fit against Ta06A (issue 15).

    python bench/bench_properties.py [--work /tmp/properties_bench] [--cores 2] [--configfile config.yaml]
    python bench/bench_properties.py --work /tmp/properties_ta_dft \
        --fitsnap-input ../shared/fitsnap/Ta_PyTorch_NN.in --eos-groups Volume_BCC Volume_FCC Volume_A15

Runs the workflow on the config (default: the bundled config.yaml, dataPath made absolute) in
--work (outside the repository) up to the exported fit, then times the properties stage alone
(its outputs removed first: the jobs of every kind of property and the table) and prints the
issue's table (lattice constant, C11, C12, C44, bulk modulus, vacancy formation energy: fit,
reference potential, error) and then the whole properties.tsv. Rerun it after a change of the
training (accuracy, stresses) to get the "after" figures with the same command, in a fresh
--work folder (a fit finished there is reused: Snakemake does not see changes of potflow/).
With --fitsnap-input, the fit is that FitSNAP input (potflow from-fitsnap; dataPath made
--data) with config.yaml's properties section, its eos_groups
replaced by --eos-groups (e.g. the Ta DFT set's volume scans).
"""

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import yaml
from measure import REPO, run_snakemake

ISSUE_ROWS = [
    ("lattice_constant_a", "lattice constant a0", "A"),
    ("C11", "C11", "GPa"),
    ("C12", "C12", "GPa"),
    ("C44", "C44", "GPa"),
    ("bulk_modulus", "bulk modulus (EOS)", "GPa"),
    ("bulk_modulus_from_elastic", "bulk modulus (C11+2C12)/3", "GPa"),
    ("vacancy_formation_energy", "vacancy formation energy", "eV"),
]


def issue_table(tsv, crystal, reference):
    """Markdown rows: property, fit, reference potential, relative error (the issue's table)."""
    table = pd.read_csv(tsv, sep="\t", keep_default_na=False, na_values=[""])
    ref = table[(table["crystal"] == crystal) & (table["reference_source"] == reference)]
    lines = [f"| property | fit | {reference} | error |", "|---|---|---|---|"]
    for prop, label, unit in ISSUE_ROWS:
        r = ref[ref["property"] == prop]
        if len(r):
            r = r.iloc[0]
            lines.append(
                f"| {label} | {r['model']:.4g} {unit} | {r['reference']:.4g} {unit} | {100 * r['relative_error']:+.1f} % |"
            )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/properties_bench")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--configfile", default=str(REPO / "config.yaml"))
    p.add_argument("--fit", default="default")
    p.add_argument("--fitsnap-input", help="a FitSNAP input file: the fit (properties from --configfile)")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "Ta_JSON"), help="dataPath of --fitsnap-input")
    p.add_argument("--eos-groups", nargs="*", help="replace properties.eos_groups")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(Path(args.configfile).read_text())
    data = Path(cfg["path"]["dataPath"])
    cfg["path"]["dataPath"] = str(data if data.is_absolute() else (REPO / data).resolve())
    if args.fitsnap_input:
        from potflow.config.fitsnap import read_fitsnap_input

        properties = cfg["properties"]
        cfg = json.loads(json.dumps(read_fitsnap_input(args.fitsnap_input).config))
        cfg["path"]["dataPath"] = str(Path(args.data).resolve())
        cfg["properties"] = properties
        cfg.setdefault("md", {})["enabled"] = False
    if args.eos_groups is not None:
        cfg["properties"]["eos_groups"] = args.eos_groups
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    from potflow.workflow import layout

    table = layout.properties_file(args.fit, "table")
    # the fit and its export (not timed), then the properties stage alone
    run_snakemake(work, args.cores, layout.exported(args.fit, cfg.get("outfile", {}).get("potential", "Ta_pytorch"), "record"))
    shutil.rmtree(work / layout.properties_dir(args.fit), ignore_errors=True)
    wall, _, _ = run_snakemake(work, args.cores, table)
    load = os.getloadavg()
    crystal = next(iter(cfg["properties"]["crystals"]))
    print(f"properties stage: {wall:.1f} s wall with --cores {args.cores} (load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}; fit {args.fit}, crystal {crystal}\n")
    reference = (cfg["properties"].get("reference_potential") or {}).get("name", "reference potential")
    print(issue_table(work / table, crystal, reference))
    print()
    print((work / table).read_text())


if __name__ == "__main__":
    main()
