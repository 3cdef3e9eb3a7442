"""Benchmark: import + descriptors of a data set with Snakemake, compared with FitSNAP.

    python bench/bench_descriptors.py ../shared/data/Ta_JSON --cores 1 2
    python bench/bench_descriptors.py ../shared/data/WBe_JSON --cores 2

Each run starts from an empty temporary folder and times ``snakemake --cores N all`` (import and
descriptor jobs of every group, Snakemake's start-up included). Peak memory is sampled (psutil,
every 0.05 s) as the largest sum of RSS over the Snakemake process tree and as the largest
single process. FitSNAP's figures (one process, same machine) are in ../shared/FITSNAP_NOTES.md.
"""

import argparse
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import yaml
from measure import run_snakemake

ZBL = "hybrid/overlay zero 10.0 zbl 4.0 4.8"
# FitSNAP's settings for the two reference sets, and its descriptor time (s, one process).
SYSTEMS = {
    "Ta": {
        "fitsnap_seconds": 2.9,
        "config": {
            "bispectrum": {
                "numTypes": 1, "twojmax": 6, "rcutfac": 4.67637, "rfac0": 0.99363, "rmin0": 0.0,
                "wj": [1.0], "radelem": [0.5], "type": ["Ta"], "bzeroflag": 1, "switchflag": 1,
            },
            "reference": {"pair_style": ZBL, "pair_coeff": ["* * zero", "* * zbl 73 73"]},
        },
    },
    "WBe": {
        "fitsnap_seconds": 405.0,
        "config": {
            "bispectrum": {
                "numTypes": 2, "twojmax": 6, "rcutfac": 4.812302818, "rfac0": 0.99363,
                "rmin0": 0.0, "wj": [1.0, 0.9590493408], "radelem": [0.5, 0.417932464],
                "type": ["W", "Be"], "bzeroflag": 1, "switchflag": 1,
            },
            "reference": {
                "pair_style": ZBL,
                "pair_coeff": ["* * zero", "1 1 zbl 74 74", "1 2 zbl 74 4", "2 2 zbl 4 4"],
            },
            "pytorch": {"multi_element_option": 2},
        },
    },
}  # fmt: skip


def folder_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def bench(data_dir, system, cores, keep=None):
    workdir = Path(tempfile.mkdtemp(prefix=f"bench_{system}_c{cores}_"))
    try:
        cfg = json.loads(json.dumps(SYSTEMS[system]["config"]))
        cfg.update({"scraper": {"scraper": "JSON"}, "path": {"dataPath": str(Path(data_dir).resolve())}})
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
        wall, peak_sum, peak_one = run_snakemake(workdir, cores, "--quiet", "--until", "compute_descriptors")
        metas = [json.loads(m.read_text()) for m in (workdir / "results" / "descriptors").glob("*/*/meta.json")]
        desc_bytes = folder_bytes(workdir / "results" / "descriptors")
        grad_bytes = sum(f.stat().st_size for f in (workdir / "results" / "descriptors").glob("*/*/grad_values.npy"))
        return {
            "system": system,
            "cores": cores,
            "groups": len(metas),
            "configs": sum(m["num_configs"] for m in metas),
            "atoms": sum(m["num_atoms"] for m in metas),
            "grad_rows": sum(m["num_grad_rows"] for m in metas),
            "wall_s": wall,
            "lammps_s": sum(m["seconds"] for m in metas),
            "peak_rss_tree_mb": peak_sum / 2**20,
            "peak_rss_process_mb": peak_one / 2**20,
            "descriptor_mb": desc_bytes / 2**20,
            "gradient_mb": grad_bytes / 2**20,
            "imported_mb": folder_bytes(workdir / "results" / "data") / 2**20,
            "fitsnap_s": SYSTEMS[system]["fitsnap_seconds"],
        }
    finally:
        if keep:
            shutil.copytree(workdir / "results", Path(keep) / f"{system}_c{cores}", dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="FitSNAP JSON data folder (Ta_JSON or WBe_JSON)")
    parser.add_argument("--system", choices=sorted(SYSTEMS), help="settings (default: from the folder name)")
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--keep", help="copy each run's results/ here")
    args = parser.parse_args(argv)
    system = args.system or ("WBe" if "wbe" in Path(args.data_dir).name.lower() else "Ta")
    print(f"# machine: {platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    rows = []
    for cores in args.cores:
        r = bench(args.data_dir, system, cores, args.keep)
        rows.append(r)
        print(
            f"{system} --cores {cores}: {r['groups']} groups, {r['configs']} configs, {r['atoms']} atoms, "
            f"{r['grad_rows']} gradient rows | wall {r['wall_s']:.1f} s (LAMMPS inside jobs "
            f"{r['lammps_s']:.1f} s) | peak RSS {r['peak_rss_tree_mb']:.0f} MB (tree), "
            f"{r['peak_rss_process_mb']:.0f} MB (one process) | descriptors {r['descriptor_mb']:.1f} MB "
            f"(gradients {r['gradient_mb']:.1f} MB), imported {r['imported_mb']:.1f} MB | "
            f"FitSNAP {r['fitsnap_s']} s: ratio {r['wall_s'] / r['fitsnap_s']:.2f}",
            flush=True,
        )
    print("\n| data | cores | wall (s) | FitSNAP (s) | ratio | peak RSS tree / one process (MB) | descriptor files (MB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['system']} ({r['configs']} configs, {r['atoms']} atoms) | {r['cores']} | {r['wall_s']:.1f} | "
            f"{r['fitsnap_s']} | {r['wall_s'] / r['fitsnap_s']:.2f} | {r['peak_rss_tree_mb']:.0f} / "
            f"{r['peak_rss_process_mb']:.0f} | {r['descriptor_mb']:.1f} |"
        )


if __name__ == "__main__":
    main()
