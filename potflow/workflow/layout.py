"""Where the workflow writes: every results path and every log, named once.

The rules (``rules/*.smk``), their scripts, the committee and leaderboard inputs and
``potflow train --config`` build their paths here. Each function returns a path relative to
the working directory; called with wildcards (``model("{fit}")``) it returns the rule's
pattern. ::

    results/
      data/{group}.npz                          structures of a training group
      descriptors/{key}/{group}/                its SNAP descriptors (key: descriptor settings)
      test_sets/{test_set}/data/{group}.npz     structures of a test-set group
      test_sets/{test_set}/descriptors/{key}/{group}/
      fits/{fit}/                               a fit: model.pt, the checkpoint, loss_vs_epochs.dat,
                                                split.tsv, resume.pt; its evaluation (evaluation.npz,
                                                FitSNAP's metrics, perconfig.dat, peratom.dat,
                                                configs.pickle, metrics.html, plots/)
        test_sets/{test_set}/                   the fit's evaluation on a test set (same files)
        committee/member{k}/                    committee member k (the training files)
        lammps/{potential}.*                    the exported potential (a linear fit also as .snapcoeff,
                                                .snapparam, .snap.mod: Linear fits)
        md/                                     the MD validation
        properties/                             material properties: {kind}.json, properties.tsv,
                                                properties.html, equation_of_state.png, phonons.png
      fits.tsv, fits.yaml                       the fits of a sweep
      leaderboard/leaderboard.*                 the fits compared
      logs/                                     one log per job, under the stage of its rule:
        data/[test_sets/{test_set}/]{group}.log
        descriptors/[test_sets/{test_set}/]{key}/{group}.log
        training/{fit}/training.log, benchmark.tsv
        committee/{fit}/member{k}/training.log, benchmark.tsv
        committee/<evaluation>/committee_uncertainty.log, committee/{fit}/md.log
        evaluation/<evaluation>/evaluate.log, metrics.log, perconfig.log, peratom.log,
                                configs.log, plots.log, loss_curves.log
        export/{fit}/{potential}.log
        md/{fit}/validate.log, log.lammps
        properties/{fit}/{kind}.log, table.log
        sweeps/fits_table.log, leaderboard.log

An *evaluation* is one set of scored configurations: a fit's own groups (its name is the fit's,
``{fit}``) or a test set (``{fit}/test_sets/{test_set}``); its files lie in
``results/fits/<evaluation>/`` and its logs in ``results/logs/evaluation/<evaluation>/``.
"""

import re

RESULTS = "results"

# Stages of the workflow: rules/<stage>.smk -> workflow_scripts/<stage>.py, logs/<stage>/.
STAGES = (
    "data", "descriptors", "training", "committee", "evaluation", "export", "md", "properties", "sweeps"
)

# File names users know (FitSNAP's, or potflow's since its first release).
MODEL = "model.pt"
LOSS_HISTORY = "loss_vs_epochs.dat"
SPLIT = "split.tsv"
RESUME_STATE = "resume.pt"
PREDICTIONS = "evaluation.npz"
FIGURE_FORMATS = ("png", "pdf")
LEADERBOARD_FORMATS = ("tsv", "md", "html", "png", "pdf")
# FitSNAP's optional error files (extras.dump_*), by config flag
ERROR_FILES = {
    "dump_perconfig": "perconfig.dat",
    "dump_peratom": "peratom.dat",
    "dump_configs": "configs.pickle",
}
# The exported potential's files, by kind (potflow.lammps.inputs writes them)
EXPORT_SUFFIXES = {
    "model": ".mliap.model",
    "descriptor": ".mliap.descriptor",
    "include": ".mod",
    "torchscript": ".torchscript.pt",
    "record": ".export.json",
}
# A linear fit's pair_style snap export: FitSNAP's .snapcoeff/.snapparam, an include file (the
# .mod name is the ML-IAP export's) and the record of its LAMMPS self-check
SNAP_EXPORT_SUFFIXES = {
    "coeff": ".snapcoeff",
    "param": ".snapparam",
    "include": ".snap.mod",
    "record": ".snap.json",
}

# The MD validation's files (fits/{fit}/md/), by the rule's output names
MD_FILES = {
    "thermo": "thermo.tsv",
    "summary": "summary.json",
    "text": "summary.txt",
    "trajectory": "trajectory.extxyz",
    "plot": "energy_temperature.png",
}
MD_COMMITTEE_FILES = {
    "table": "committee.tsv",
    "candidates": "candidates.extxyz",
    "summary": "committee.json",
    "plot": "committee_disagreement.png",
}
# The material properties of a fit (fits/{fit}/properties/): one result per kind of property
# (potflow.properties.compute), then the table and figures
PROPERTY_KINDS = ("eos", "elastic", "defects", "surfaces", "phonons")
PROPERTIES_FILES = {
    "table": "properties.tsv",
    "html": "properties.html",
    "eos_plot": "equation_of_state.png",
    "phonon_plot": "phonons.png",
}

# The figures of an evaluation (potflow.evaluation.plots draws them, in this order), in plots/, and
# those beside them: a fit's loss curves, a committee's uncertainty
EVALUATION_FIGURES = ("energy_parity", "force_parity", "group_errors", "force_error_histogram", "stress_parity")
LOSS_FIGURE = "loss_curves"
COMMITTEE_FIGURE = "committee_uncertainty"

# Where the workflow remembers the config checks that passed at parse time (markers only, in
# Snakemake's own folder of the working directory), so that a later start skips them.
PARSE_CHECKS = ".snakemake/potflow_checks"

# What each wildcard may match (the rules' wildcard_constraints).
NAME = r"[^/]+"  # a group, fit, test set or potential: one folder name
DESCRIPTOR_KEY = r"[0-9a-f]{12}"
MEMBER = r"[1-9][0-9]*"  # committee members 1..N-1 (member 0 is the fit itself)
EVALUATION = r"[^/]+(?:/test_sets/[^/]+)?"
_EVALUATION = re.compile(r"([^/]+)(?:/test_sets/([^/]+))?")


# ----------------------------------------------------------------------------- data, descriptors


def _source(test_set, results):
    return results if test_set is None else f"{results}/test_sets/{test_set}"


def structures(group, test_set=None, results=RESULTS):
    """The imported structures of a group (of the training data, or of a test set)."""
    return f"{_source(test_set, results)}/data/{group}.npz"


def descriptors(group, key, test_set=None, results=RESULTS):
    """The descriptor folder of a group, for the descriptor settings ``key``."""
    return f"{_source(test_set, results)}/descriptors/{key}/{group}"


# ----------------------------------------------------------------------------- training


def fit_dir(fit, results=RESULTS):
    """A fit's folder: its training files, its evaluation, export and MD."""
    return f"{results}/fits/{fit}"


def training_dir(fit, member=None, results=RESULTS):
    """Where a fit (``member`` None) or committee member ``member`` keeps its training files."""
    if member is None:
        return fit_dir(fit, results)
    return f"{fit_dir(fit, results)}/committee/member{member}"


def model(fit, member=None, results=RESULTS):
    """The selected model of a fit (or of a committee member)."""
    return f"{training_dir(fit, member, results)}/{MODEL}"


def checkpoint(fit, name, member=None, results=RESULTS):
    """The training checkpoint (``name``: FitSNAP's pytorch.save_state_output)."""
    return f"{training_dir(fit, member, results)}/{name}"


def loss_history(fit, member=None, results=RESULTS):
    """Training and validation loss per epoch (FitSNAP's loss_vs_epochs.dat)."""
    return f"{training_dir(fit, member, results)}/{LOSS_HISTORY}"


def split(fit, member=None, results=RESULTS):
    """Which configurations trained, validated and tested a fit (or member)."""
    return f"{training_dir(fit, member, results)}/{SPLIT}"


def resume_state(fit, member=None, results=RESULTS):
    """The running state of a training job, from which an interrupted job continues."""
    return f"{training_dir(fit, member, results)}/{RESUME_STATE}"


def training_files(fit, checkpoint_name, member=None, results=RESULTS):
    """The files of a training job (potflow.training.loop.TrainPaths): the rule's outputs
    (model, checkpoint, loss, split) and its resume state."""
    return {
        "model": model(fit, member, results),
        "checkpoint": checkpoint(fit, checkpoint_name, member, results),
        "loss": loss_history(fit, member, results),
        "split": split(fit, member, results),
        "resume": resume_state(fit, member, results),
    }


def torchrun_job(folder):
    """The job file the training processes of a multi-GPU fit read (deleted when they end)."""
    return f"{folder}/.train_job.json"


# ----------------------------------------------------------------------------- evaluation


def evaluation(fit, test_set=None):
    """The name of an evaluation: the fit's own groups, or a test set scored by the fit."""
    return fit if test_set is None else f"{fit}/test_sets/{test_set}"


def parse_evaluation(name):
    """(fit, test set or None) of an evaluation name."""
    match = _EVALUATION.fullmatch(name)
    if match is None:
        raise ValueError(f"not an evaluation name: {name!r}")
    return match.group(1), match.group(2)


def evaluation_title(name):
    """How figures and tables name an evaluation: "fit F" or "fit F, test set T"."""
    fit, test_set = parse_evaluation(name)
    return f"fit {fit}" + (f", test set {test_set}" if test_set else "")


def evaluation_dir(name):
    """The folder of an evaluation's files (a fit's folder, or its test_sets/{test_set})."""
    return fit_dir(name)


def predictions(name):
    """Float64 predictions of the selected model (and committee) on an evaluation's configurations."""
    return f"{evaluation_dir(name)}/{PREDICTIONS}"


def metrics(name, metrics_file):
    """FitSNAP's metrics table (``metrics_file``: outfile.metrics) of an evaluation."""
    return f"{evaluation_dir(name)}/{metrics_file}"


def metrics_html(name):
    """The metrics table as HTML, for the report."""
    return f"{evaluation_dir(name)}/metrics.html"


def error_file(name, flag):
    """FitSNAP's optional error file of an evaluation, by its extras flag (ERROR_FILES)."""
    return f"{evaluation_dir(name)}/{ERROR_FILES[flag]}"


def plot(name, figure, ext):
    """A figure of an evaluation (or a fit's loss curves), as png or pdf."""
    return f"{evaluation_dir(name)}/plots/{figure}.{ext}"


def evaluation_files(name, metrics_file, extras):
    """Every file of an evaluation: metrics, figures and the error files ``extras`` asks for."""
    files = [metrics(name, metrics_file), metrics_html(name)]
    files += [plot(name, f, ext) for f in EVALUATION_FIGURES for ext in FIGURE_FORMATS]
    return files + [error_file(name, flag) for flag in ERROR_FILES if extras[flag]]


# ----------------------------------------------------------------------------- export, MD


def lammps_dir(fit):
    """The exported potential of a fit, as LAMMPS reads it."""
    return f"{fit_dir(fit)}/lammps"


def exported(fit, potential, kind):
    """One exported file of potential ``potential`` (kind: a key of EXPORT_SUFFIXES)."""
    return f"{lammps_dir(fit)}/{potential}{EXPORT_SUFFIXES[kind]}"


def exported_snap(fit, potential, kind):
    """One file of a linear fit's pair_style snap export (kind: a key of SNAP_EXPORT_SUFFIXES)."""
    return f"{lammps_dir(fit)}/{potential}{SNAP_EXPORT_SUFFIXES[kind]}"


def md_file(fit, kind):
    """A file of a fit's MD validation (kind: a key of MD_FILES)."""
    return f"{fit_dir(fit)}/md/{MD_FILES[kind]}"


def md_committee_file(fit, kind):
    """A file of the committee's check of a fit's MD run (kind: a key of MD_COMMITTEE_FILES)."""
    return f"{fit_dir(fit)}/md/{MD_COMMITTEE_FILES[kind]}"


def committee_files(fit, test_sets, md):
    """What a committee adds to a fit: the uncertainty figure of each evaluation (the fit's and
    each of ``test_sets``') and, with ``md``, its check of the MD run."""
    names = [evaluation(fit, t) for t in [None, *test_sets]]
    files = [plot(n, COMMITTEE_FIGURE, ext) for n in names for ext in FIGURE_FORMATS]
    if md:
        files += [md_committee_file(fit, kind) for kind in ("table", "candidates", "summary")]
    return files


# ----------------------------------------------------------------------------- properties


def properties_dir(fit):
    """A fit's material properties."""
    return f"{fit_dir(fit)}/properties"


def property_result(fit, kind):
    """The computed properties of one kind (PROPERTY_KINDS) for every crystal, as JSON."""
    return f"{properties_dir(fit)}/{kind}.json"


def properties_file(fit, kind):
    """The properties table or a figure (kind: a key of PROPERTIES_FILES)."""
    return f"{properties_dir(fit)}/{PROPERTIES_FILES[kind]}"


def properties_log(fit, step):
    """The log of one properties job of a fit (a kind of property, or "table")."""
    return f"{log_dir('properties')}/{fit}/{step}.log"


# ----------------------------------------------------------------------------- sweeps


def fits_table(ext, results=RESULTS):
    """The fits of a sweep: their differing settings (tsv) or whole configs (yaml)."""
    return f"{results}/fits.{ext}"


def leaderboard(ext, results=RESULTS):
    """Every fit's errors, cost and MD checks, as a table (tsv, md, html) or figure (png, pdf)."""
    return f"{results}/leaderboard/leaderboard.{ext}"


def leaderboard_sources(fit, metrics_file, members, md, properties=False):
    """The files a fit's leaderboard row is read from (None where the fit has no such file);
    ``members``: its committee members 1..N-1, ``md``: whether it runs the MD validation,
    ``properties``: whether it computes material properties."""
    return {
        "metrics": metrics(evaluation(fit), metrics_file),
        "model": model(fit),
        "members": [model(fit, k) for k in members],
        # Snakemake's benchmark files of the training jobs: their wall time
        "benchmarks": [training_benchmark(fit, k) for k in [None, *members]],
        "md_summary": md_file(fit, "summary") if md else None,
        "md_committee": md_committee_file(fit, "summary") if md and members else None,
        "properties": properties_file(fit, "table") if properties else None,
    }


# ----------------------------------------------------------------------------- logs


def log_dir(stage, results=RESULTS):
    """The logs of one stage: results/logs/<stage>/."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    return f"{results}/logs/{stage}"


def import_log(group, test_set=None):
    """The log of a group's import (test sets under logs/data/test_sets/)."""
    where = "" if test_set is None else f"test_sets/{test_set}/"
    return f"{log_dir('data')}/{where}{group}.log"


def descriptors_log(group, key, test_set=None):
    """The log of a group's descriptor job (test sets under logs/descriptors/test_sets/)."""
    where = "" if test_set is None else f"test_sets/{test_set}/"
    return f"{log_dir('descriptors')}/{where}{key}/{group}.log"


def _training_logs(fit, member):
    if member is None:
        return f"{log_dir('training')}/{fit}"
    return f"{log_dir('committee')}/{fit}/member{member}"


def training_log(fit, member=None):
    """The log of a fit's training job (a committee member's: under logs/committee/)."""
    return f"{_training_logs(fit, member)}/training.log"


def training_benchmark(fit, member=None):
    """Snakemake's benchmark of a training job (its wall time, read by the leaderboard)."""
    return f"{_training_logs(fit, member)}/benchmark.tsv"


def evaluation_log(name, step):
    """The log of one step (evaluate, metrics, plots, ...) of an evaluation."""
    return f"{log_dir('evaluation')}/{name}/{step}.log"


def committee_log(name, step):
    """The log of a committee step of an evaluation (or, for "md", of a fit's MD run)."""
    return f"{log_dir('committee')}/{name}/{step}.log"


def export_log(fit, potential):
    """The log of a fit's export to LAMMPS."""
    return f"{log_dir('export')}/{fit}/{potential}.log"


def md_log(fit):
    """The log of a fit's MD validation."""
    return f"{log_dir('md')}/{fit}/validate.log"


def lammps_log(fit):
    """LAMMPS's own log (log.lammps) of a fit's MD validation."""
    return f"{log_dir('md')}/{fit}/log.lammps"


def sweeps_log(step):
    """The log of the fits table or the leaderboard."""
    return f"{log_dir('sweeps')}/{step}.log"
