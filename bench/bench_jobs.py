"""Benchmark: small jobs. Import + descriptors with Snakemake beside FitSNAP in one run, and the
time of a dry run with nothing to do.

    python bench/bench_jobs.py descriptors /tmp/WBe_every5 --config configs/WBe.yaml --cores 2
    python bench/bench_jobs.py descriptors ../shared/data/Ta_JSON --config bench/ta_json.yaml --cores 2
    python bench/bench_jobs.py dryrun --work /tmp/example_run

``descriptors`` runs ``snakemake --until compute_descriptors`` from an empty folder (Snakemake's
start and every job's included; the config's data path replaced by DATA), then FitSNAP
3.1.0.4 on the same folder (``../shared/fitsnap/run_fitsnap.sh``, one epoch), whose own timer
``descriptor_s`` covers its two LAMMPS passes; both back to back so that they see the same
load, with ``uptime`` before and after. Between the two it times Snakemake's start on the
finished folder and runs the same work in one fresh Python process without Snakemake (every
group imported and computed in turn: ``one-process``), so that the cost of Snakemake and of one
process per job stands beside the work itself. (W–Be every 5th: ``../shared/fitsnap/make_subset.sh
../shared/data/WBe_JSON /tmp/WBe_every5 5``.) ``dryrun`` runs the bundled example to the end
once (skipped when --work holds a finished run), then times ``snakemake -n`` three times.
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from measure import REPO, child_env, run_snakemake

FITSNAP = Path(os.environ.get("POTFLOW_SHARED", REPO.parent / "shared")) / "fitsnap" / "run_fitsnap.sh"


def skip_slurm_probe():
    """Put a stub ``scontrol`` first on PATH when the real one does not answer within 2 s.

    Snakemake's Slurm executor plugin runs ``scontrol show config`` (10 s timeout) when it is
    imported, at every Snakemake start. On a machine with Slurm's client commands but no
    running controller (this shared VM while a test cluster is down) that adds up to 10 s to
    each start that a machine without Slurm (or with a live one) does not pay."""
    try:
        subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=2, check=True)
        return
    except FileNotFoundError:
        return
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError):
        pass
    stub = Path(tempfile.mkdtemp(prefix="no_scontrol_"))
    (stub / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (stub / "scontrol").chmod(0o755)
    os.environ["PATH"] = f"{stub}{os.pathsep}{os.environ['PATH']}"
    print("# scontrol does not answer here: a stub scontrol (exit 1) is first on PATH", flush=True)


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def data_config(data, config):
    """The config file ``config`` with the JSON folder ``data`` as its data."""
    cfg = yaml.safe_load(Path(config).read_text())
    cfg.setdefault("path", {})["dataPath"] = str(Path(data).resolve())
    cfg.setdefault("scraper", {})["scraper"] = "JSON"
    return cfg


def potflow_descriptors(data, config, cores):
    """(wall s, CPU s of Snakemake and its jobs, LAMMPS s summed over jobs, groups, configs) of
    import + descriptors from empty."""
    work = Path(tempfile.mkdtemp(prefix="bench_jobs_"))
    (work / "config.yaml").write_text(yaml.safe_dump(data_config(data, config)))
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, _, _ = run_snakemake(work, cores, "--until", "compute_descriptors", "--quiet")
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    metas = [json.loads(m.read_text()) for m in (work / "results" / "descriptors").glob("*/*/meta.json")]
    lammps = sum(m["seconds"] for m in metas)
    # Snakemake's start on this workflow: the same command with nothing left to do
    t0 = time.perf_counter()
    run_snakemake(work, cores, "--until", "compute_descriptors", "--quiet")
    start = time.perf_counter() - t0
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return wall, cpu, lammps, len(metas), sum(m["num_configs"] for m in metas), start


def one_process(data, config):
    """(wall s, CPU s) of the same work in one fresh Python process, without Snakemake: every
    group imported and its descriptors computed in turn (``one-process``)."""
    cmd = [sys.executable, __file__, "one-process", str(data), "--config", str(config)]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=child_env(), check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime


def cmd_one_process(args):
    from potflow.config import groups as pfgroups
    from potflow.config.load import prepare_config
    from potflow.data.structures import import_group
    from potflow.descriptors.compute import compute_group_descriptors
    from potflow.descriptors.settings import descriptor_settings

    cfg = prepare_config(data_config(args.data, args.config))
    settings = descriptor_settings(cfg)
    elements = list(settings["bispectrum"]["type"])
    data_dir, scraper = pfgroups.data_source(cfg)
    with tempfile.TemporaryDirectory(prefix="bench_one_") as tmp:
        for group in pfgroups.fit_groups(cfg):
            imported = Path(tmp) / f"{group}.npz"
            source = pfgroups.group_source(data_dir, scraper, group)
            import_group(source, scraper, elements, imported, cfg["descriptors"]["min_distance"])
            compute_group_descriptors(settings, imported, Path(tmp) / group, group)


def fitsnap_descriptors(data, system):
    """FitSNAP's own descriptor timer (s) and its whole wall time, one epoch, on ``data``."""
    env = dict(os.environ, ANCHOR_DATA_PATH=str(Path(data).resolve()), ANCHOR_KEEP="0")
    out = subprocess.run(["bash", str(FITSNAP), system, "1"], env=env, capture_output=True, text=True)
    found = dict(re.findall(r"(\w+)=(\S+)", out.stdout.split("=== ANCHOR RESULT ===")[-1]))
    if found.get("status") != "ok":
        sys.exit(f"FitSNAP failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return float(found["descriptor_s"]), float(found["wall_s"])


def cmd_descriptors(args):
    system = args.system or ("WBe" if "wbe" in str(args.data).lower() else "Ta")
    for _ in range(args.repeat):
        before = uptime()
        wall, cpu, lammps, groups, configs, start = potflow_descriptors(args.data, args.config, args.cores)
        one_wall, one_cpu = one_process(args.data, args.config) if not args.no_one_process else (float("nan"),) * 2
        fs_desc, fs_wall = fitsnap_descriptors(args.data, system) if not args.no_fitsnap else (float("nan"),) * 2
        after = uptime()
        print(f"uptime before: {before}\nuptime after:  {after}")
        print(
            f"{system} {Path(args.data).name} ({groups} groups, {configs} configs), --cores {args.cores}: "
            f"potflow {wall:.1f} s (CPU {cpu:.1f} s, LAMMPS inside jobs {lammps:.1f} s) | FitSNAP descriptor_s {fs_desc:.1f} s "
            f"(wall {fs_wall:.1f} s) | ratio {wall / fs_desc:.2f}" + (f" | {args.label}" if args.label else ""),
            flush=True,
        )
        jobs = 2 * groups  # an import and a descriptor job per group
        print(
            f"  the same work in one process (no Snakemake): {one_wall:.1f} s wall, {one_cpu:.1f} CPU-s | "
            f"Snakemake's start (nothing to do): {start:.2f} s | Snakemake and its {jobs} job starts: "
            f"{cpu - one_cpu:.1f} CPU-s ({(cpu - one_cpu) / jobs:.2f} a job)",
            flush=True,
        )


def cmd_dryrun(args):
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work)]
    base += ["--configfile", str(REPO / "config.yaml"), "--config", f"path={{dataPath: {REPO / 'data' / 'Ta_example'}}}"]
    if not (work / "results" / "fits" / "default" / "md" / "summary.json").exists():
        t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([*base, "--cores", str(args.cores), "--quiet"], env=child_env(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        print(f"uptime: {uptime()}")
        print(f"full run of the bundled example: {time.perf_counter() - t0:.1f} s, CPU {cpu:.1f} s (--cores {args.cores})")
    print(f"uptime: {uptime()}")
    for _ in range(3):
        t0 = time.perf_counter()
        out = subprocess.run([*base, "-n", "--cores", "1"], env=child_env(), capture_output=True, text=True)
        wall = time.perf_counter() - t0
        nothing = "Nothing to be done" in out.stdout + out.stderr
        print(f"snakemake -n: {wall:.2f} s ({'nothing to be done' if nothing else 'JOBS PLANNED'})", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("descriptors")
    d.add_argument("data", help="a FitSNAP JSON data folder")
    d.add_argument("--config", default=str(REPO / "configs" / "WBe.yaml"))
    d.add_argument("--system", choices=["Ta", "WBe"], help="FitSNAP's input (default: from the folder name)")
    d.add_argument("--cores", type=int, default=2)
    d.add_argument("--repeat", type=int, default=1)
    d.add_argument("--no-fitsnap", action="store_true")
    d.add_argument("--no-one-process", action="store_true", help="skip the one-process run of the same work")
    d.add_argument("--label", help="a note printed with each result line")
    o = sub.add_parser("one-process", help="import and descriptors of every group in this one process")
    o.add_argument("data")
    o.add_argument("--config", default=str(REPO / "configs" / "WBe.yaml"))
    r = sub.add_parser("dryrun")
    r.add_argument("--work", default="/tmp/bench_dryrun")
    r.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"# {os.cpu_count()} CPUs, git {subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}")
    skip_slurm_probe()
    {"descriptors": cmd_descriptors, "dryrun": cmd_dryrun, "one-process": cmd_one_process}[args.cmd](args)


if __name__ == "__main__":
    main()
