"""The layout of results (potflow/workflow/layout.py): the names users know, one log tree."""

import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from workflow_runs import run_workflow

from potflow.evaluation.plots import FIGURES
from potflow.lammps.inputs import SUFFIXES
from potflow.training.loop import TrainPaths
from potflow.workflow import layout

REPO = Path(__file__).resolve().parent.parent


def test_the_file_names_users_know():
    assert layout.structures("Liquid") == "results/data/Liquid.npz"
    assert layout.descriptors("Liquid", "0123456789ab") == "results/descriptors/0123456789ab/Liquid"
    assert layout.structures("Liquid", "held_out") == "results/test_sets/held_out/data/Liquid.npz"
    assert layout.descriptors("Liquid", "k", "held_out") == "results/test_sets/held_out/descriptors/k/Liquid"
    assert layout.model("default") == "results/fits/default/model.pt"
    assert layout.model("default", 2) == "results/fits/default/committee/member2/model.pt"
    assert layout.training_files("f", "FitTorch_Pytorch.pt", 1) == {
        "model": "results/fits/f/committee/member1/model.pt",
        "checkpoint": "results/fits/f/committee/member1/FitTorch_Pytorch.pt",
        "loss": "results/fits/f/committee/member1/loss_vs_epochs.dat",
        "split": "results/fits/f/committee/member1/split.tsv",
        "resume": "results/fits/f/committee/member1/resume.pt",
    }
    held_out = layout.evaluation("default", "held_out")
    assert layout.predictions(held_out) == "results/fits/default/test_sets/held_out/evaluation.npz"
    assert layout.metrics(held_out, "Ta_metrics.dat") == "results/fits/default/test_sets/held_out/Ta_metrics.dat"
    assert layout.error_file("default", "dump_peratom") == "results/fits/default/peratom.dat"
    assert layout.plot("default", layout.LOSS_FIGURE, "pdf") == "results/fits/default/plots/loss_curves.pdf"
    assert layout.exported("default", "Ta_pytorch", "include") == "results/fits/default/lammps/Ta_pytorch.mod"
    assert layout.md_file("default", "summary") == "results/fits/default/md/summary.json"
    assert layout.md_committee_file("default", "candidates") == "results/fits/default/md/candidates.extxyz"
    assert layout.fits_table("tsv") == "results/fits.tsv"
    assert layout.leaderboard("png") == "results/leaderboard/leaderboard.png"


def test_wildcards_give_the_rules_patterns():
    assert layout.model("{fit}", "{member}") == "results/fits/{fit}/committee/member{member}/model.pt"
    assert layout.metrics_html("{evaluation}") == "results/fits/{evaluation}/metrics.html"
    assert layout.evaluation("{fit}", "{test_set}") == "{fit}/test_sets/{test_set}"
    assert layout.exported("{fit}", "{potential}", "record") == "results/fits/{fit}/lammps/{potential}.export.json"


def test_another_results_folder():
    """potflow train --config --results DIR: the training files as the rule lays them out, in DIR."""
    files = layout.training_files("a", "ck.pt", results="/scratch/out")
    assert files["model"] == "/scratch/out/fits/a/model.pt"
    assert layout.descriptors("g", "k", results="/scratch/out") == "/scratch/out/descriptors/k/g"


def test_the_names_agree_with_the_code_that_writes_the_files():
    assert set(layout.training_files("f", "c")) == {f.name for f in fields(TrainPaths)}
    assert layout.EXPORT_SUFFIXES == SUFFIXES
    assert layout.EVALUATION_FIGURES == FIGURES


def test_evaluation_names():
    for fit, test_set in [("default", None), ("layer_sizes-16_seed-0", "held_out")]:
        name = layout.evaluation(fit, test_set)
        assert re.fullmatch(layout.EVALUATION, name)
        assert layout.parse_evaluation(name) == (fit, test_set)
    assert layout.evaluation_title("a/test_sets/b") == "fit a, test set b"
    assert layout.evaluation_dir("a") == layout.fit_dir("a")
    for bad in ["a/b", "a/test_sets/b/c", ""]:
        assert not re.fullmatch(layout.EVALUATION, bad)
        with pytest.raises(ValueError):
            layout.parse_evaluation(bad)


def test_every_log_lies_in_the_tree_of_its_stage():
    logs = {
        "data": [layout.import_log("g"), layout.import_log("g", "t")],
        "descriptors": [layout.descriptors_log("g", "k"), layout.descriptors_log("g", "k", "t")],
        "training": [layout.training_log("f"), layout.training_benchmark("f")],
        "committee": [
            layout.training_log("f", 1), layout.training_benchmark("f", 1),
            layout.committee_log("f/test_sets/t", layout.COMMITTEE_FIGURE), layout.committee_log("f", "md"),
        ],
        "evaluation": [layout.evaluation_log("f", "evaluate"), layout.evaluation_log("f/test_sets/t", "plots")],
        "export": [layout.export_log("f", "p")],
        "md": [layout.md_log("f"), layout.lammps_log("f")],
        "sweeps": [layout.sweeps_log("leaderboard")],
        "properties": [layout.properties_log("f", "eos"), layout.properties_log("f", "table")],
    }  # fmt: skip
    assert set(logs) == set(layout.STAGES)
    for stage, paths in logs.items():
        for path in paths:
            assert path.startswith(f"results/logs/{stage}/"), path
    with pytest.raises(ValueError, match="unknown stage"):
        layout.log_dir("import")


def test_the_files_of_an_evaluation_and_a_committee():
    extras = {"dump_perconfig": 1, "dump_peratom": 0, "dump_configs": 1}
    files = layout.evaluation_files("f", "m.dat", extras)
    assert files[:2] == ["results/fits/f/m.dat", "results/fits/f/metrics.html"]
    assert len(files) == 2 + 2 * len(FIGURES) + 2
    assert files[-2:] == ["results/fits/f/perconfig.dat", "results/fits/f/configs.pickle"]
    committee = layout.committee_files("f", ["t"], md=True)
    assert "results/fits/f/test_sets/t/plots/committee_uncertainty.png" in committee
    assert "results/fits/f/md/committee.json" in committee
    assert not any("/md/" in f for f in layout.committee_files("f", [], md=False))
    sources = layout.leaderboard_sources("f", "m.dat", range(1, 3), md=True)
    assert sources["benchmarks"] == [
        "results/logs/training/f/benchmark.tsv",
        "results/logs/committee/f/member1/benchmark.tsv",
        "results/logs/committee/f/member2/benchmark.tsv",
    ]
    assert sources["md_committee"] == "results/fits/f/md/committee.json"
    assert layout.leaderboard_sources("f", "m.dat", range(1, 1), md=True)["md_committee"] is None


def rule_stages():
    """{rule name: the stage whose rule file defines it}."""
    stages = {}
    for stage in layout.STAGES:
        text = (REPO / "rules" / f"{stage}.smk").read_text()
        for a, b in re.findall(r"^(?:rule (\w+)|use rule \w+ as (\w+) with):", text, re.MULTILINE):
            stages[a or b] = stage
    return stages


def test_every_job_logs_in_its_stage(tmp_path):
    """A dry run of every stage (sweep, committee, linear fit, test set, MD): each job's log and benchmark
    lies under results/logs/<the stage of its rule>/, and no log under results/fits/."""
    data = REPO / "data" / "Ta_example"
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    for group in ("Liquid", "Volume_FCC"):
        (held_out / f"{group}.xyz").write_bytes((data / f"{group}.xyz").read_bytes())
    cfg = yaml.safe_load((REPO / "configs" / "sweep_example.yaml").read_text())
    cfg["path"]["dataPath"] = str(data)
    cfg["sweep"] = {"pytorch.energy_weight": [0.01, 0.1]}  # a key linear fits read too
    cfg["fits"] = {"net": {}, "lin": {"solver": {"solver": "SVD"}, "committee": {"members": 1}}}
    cfg["test_sets"] = {"held_out": {"dataPath": str(held_out), "scraper": "XYZ"}}
    cfg["extras"] = {"dump_configs": 1}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = run_workflow(tmp_path, "--dry-run", "--cores", "1").stdout
    stages = rule_stages()
    seen = set()
    for job in out.split("\nrule ")[1:]:
        rule = job.split(":", 1)[0]
        if rule == "all":
            continue
        seen.add(rule)
        logs = re.findall(r"^    (?:log|benchmark): (.+)$", job, re.MULTILINE)
        assert logs, f"rule {rule} writes no log"
        for path in ", ".join(logs).split(", "):
            assert path.startswith(f"results/logs/{stages[rule]}/"), (rule, path)
    assert seen == set(stages), set(stages) - seen
