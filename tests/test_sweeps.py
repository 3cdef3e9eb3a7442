"""Sweeps: expansion and naming of fits, descriptor sharing (Snakemake's dry run), the leaderboard."""

import json

import ase.io
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from workflow_runs import job_counts, run_workflow

from potflow.config.load import prepare_config
from potflow.config.sweeps import (
    deep_merge,
    expand_fits,
    fits_table,
    format_value,
    member_config,
    member_seed,
    short_keys,
    sweep_points,
)
from potflow.descriptors.settings import descriptor_key
from potflow.errors import PotflowInputError
from potflow.evaluation import leaderboard as lb
from potflow.evaluation.error_files import METRICS_COLUMNS, format_metrics
from potflow.models.files import save_model
from potflow.models.network import AtomicEnergyModel

ZBL = {"pair_style": "hybrid/overlay zero 10.0 zbl 4.0 4.8", "pair_coeff": ["* * zero", "* * zbl 73 73"]}
LAYERS = [["num_desc", 8, 1], ["num_desc", 16, 16, 1], ["num_desc", 32, 1]]


def fits_of(cfg):
    return expand_fits(prepare_config(cfg))


# ----------------------------------------------------------------------------- expansion


def test_no_fits_is_one_default_fit():
    fits = fits_of({"pytorch": {"num_epochs": 3}})
    assert list(fits) == ["default"]
    assert fits["default"]["pytorch"]["num_epochs"] == 3
    assert not {"fits", "sweep", "leaderboard"} & set(fits["default"])
    # the one fit's config is the checked base config itself
    base = prepare_config({"pytorch": {"num_epochs": 3}})
    for key in ("fits", "sweep", "leaderboard"):
        base.pop(key)
    assert fits["default"] == base


def test_deep_merge_merges_mappings_and_replaces_lists():
    base = {"pytorch": {"layer_sizes": ["num_desc", 64, 64, 1], "learning_rate": 1e-3}, "groups": {"A": {"eweight": 1}}}
    out = deep_merge(base, {"pytorch": {"layer_sizes": ["num_desc", 8, 1]}, "groups": {"A": {"fweight": 2}}})
    assert out["pytorch"] == {"layer_sizes": ["num_desc", 8, 1], "learning_rate": 1e-3}
    assert out["groups"]["A"] == {"eweight": 1, "fweight": 2}
    assert base["groups"]["A"] == {"eweight": 1}  # the base is not touched


def test_sweep_grid_names_and_settings():
    fits = fits_of({"sweep": {"pytorch.layer_sizes": LAYERS, "pytorch.seed": [0, 1]}, "pytorch": {"learning_rate": 2e-3}})
    assert list(fits) == [
        "layer_sizes-8_seed-0", "layer_sizes-8_seed-1", "layer_sizes-16x16_seed-0",
        "layer_sizes-16x16_seed-1", "layer_sizes-32_seed-0", "layer_sizes-32_seed-1",
    ]  # fmt: skip
    cfg = fits["layer_sizes-16x16_seed-1"]
    assert cfg["pytorch"]["layer_sizes"] == ["num_desc", 16, 16, 1]
    assert cfg["pytorch"]["seed"] == 1
    assert cfg["pytorch"]["learning_rate"] == 2e-3  # base settings kept
    # each fit's config is a complete config of its own
    again = prepare_config(cfg)
    assert again.pop("fits") == {} and again.pop("sweep") == {}
    again.pop("leaderboard")
    assert again == cfg


def test_fits_map_crossed_with_sweep():
    fits = fits_of(
        {
            "fits": {"small": {"pytorch": {"layer_sizes": ["num_desc", 8, 1]}}, "wide": {"committee": {"members": 3}}},
            "sweep": {"pytorch.learning_rate": [1e-3, 5e-4]},
        }
    )
    assert list(fits) == [
        "small_learning_rate-0.001", "small_learning_rate-0.0005",
        "wide_learning_rate-0.001", "wide_learning_rate-0.0005",
    ]  # fmt: skip
    assert fits["small_learning_rate-0.0005"]["pytorch"]["layer_sizes"] == ["num_desc", 8, 1]
    assert fits["small_learning_rate-0.0005"]["pytorch"]["learning_rate"] == 5e-4
    assert fits["wide_learning_rate-0.001"]["committee"]["members"] == 3
    assert fits["small_learning_rate-0.001"]["committee"]["members"] == 1


def test_names_are_readable_and_filesystem_safe():
    assert format_value(["num_desc", 64, 64, 1]) == "64x64"
    assert format_value(["num_desc", 1]) == "none"
    assert format_value(1e-3) == "0.001"
    assert format_value(True) == "true"
    assert format_value("hybrid/overlay zero 10.0") == "hybrid_overlay_zero_10.0"
    assert short_keys(["pytorch.seed", "groups.random_seed"]) == {"pytorch.seed": "seed", "groups.random_seed": "random_seed"}
    assert short_keys(["groups.Liquid.fweight", "groups.Surface.fweight"]) == {
        "groups.Liquid.fweight": "Liquid.fweight", "groups.Surface.fweight": "Surface.fweight",
    }  # fmt: skip
    names = [n for n, _ in sweep_points({"reference.pair_style": ["zero 10.0", "zbl 4.0 4.8"]})]
    assert names == ["pair_style-zero_10.0", "pair_style-zbl_4.0_4.8"]
    assert all("/" not in n and " " not in n for n in names)


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"sweep": {"pytorch.seed": [0, 0]}}, "lists 0 twice"),
        ({"sweep": {"pytorch.learning_rate": [0.001, 0.0010000001]}}, "same fit name"),
        ({"sweep": {"pytorch.layer_sizes": [["num_desc", 8, 2]]}}, "must end with 1"),
        ({"sweep": {"pytorch.no_such_key": [1]}}, "no_such_key"),
        ({"sweep": {"path.dataPath": ["a", "b"]}}, "'path' of fit"),
        ({"fits": {"a": {"bispectrum": {"type": ["W"]}}}}, "bispectrum.type"),
        ({"fits": {"a": {"pytorch": {"save_state_output": "x.pt"}}}}, "pytorch.save_state_output"),
        ({"fits": {"a": {"sweep": {"pytorch.seed": [1]}}}}, "not allowed inside a fit"),
    ],
)
def test_bad_sweeps_are_refused_with_one_line(cfg, message):
    with pytest.raises(PotflowInputError) as info:
        fits_of(cfg)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_fit_name_refused_by_schema():
    with pytest.raises(PotflowInputError, match="fits"):
        prepare_config({"fits": {"a/b": {}}})


def test_committee_member_seeds():
    fits = fits_of({"committee": {"members": 3}, "pytorch": {"seed": 5}, "sweep": {"pytorch.seed": [5, 6]}})
    cfg = fits["seed-5"]
    assert cfg["committee"]["members"] == 3
    seeds = [member_config(cfg, k)["pytorch"]["seed"] for k in range(3)]
    assert seeds[0] == 5 and len(set(seeds)) == 3  # member 0 is the fit itself
    other = [member_seed(6, k) for k in range(3)]
    assert not set(seeds) & set(other)  # sweeping the seed never repeats a member
    # members differ in the seed only
    m2 = member_config(cfg, 2)
    m2["pytorch"]["seed"] = 5
    assert m2 == cfg


def test_fits_table_records_differing_settings():
    fits = fits_of({"sweep": {"pytorch.layer_sizes": LAYERS[:2], "bispectrum.twojmax": [4, 6]}, "committee": {"members": 2}})
    table = fits_table(fits)
    assert list(table.columns) == [
        "fit", "bispectrum.twojmax", "pytorch.layer_sizes", "descriptor_key", "committee_members", "member_seeds",
    ]  # fmt: skip
    row = table.set_index("fit").loc["layer_sizes-16x16_twojmax-4"]
    assert row["pytorch.layer_sizes"] == "[num_desc, 16, 16, 1]"
    assert row["bispectrum.twojmax"] == 4
    assert row["descriptor_key"] == descriptor_key(fits["layer_sizes-16x16_twojmax-4"])
    assert table["descriptor_key"].nunique() == 2
    assert row["member_seeds"].split()[0] == "0"


# ----------------------------------------------------------------------------- dry runs

GROUPS = ["Displaced_FCC", "Strained_BCC", "Surface_100", "Volume_BCC"]


@pytest.fixture(scope="module")
def datadir(tmp_path_factory, repo_root):
    """A tiny copy of the bundled example: 4 groups x 4 configurations."""
    root = tmp_path_factory.mktemp("sweep_data")
    for group in GROUPS:
        frames = ase.io.read(repo_root / "data" / "Ta_example" / f"{group}.xyz", index=":4")
        ase.io.write(root / f"{group}.xyz", frames, format="extxyz")
    return root


def planned_jobs(workdir, cfg):
    """{rule: jobs} of Snakemake's dry run of the whole workflow for ``cfg``."""
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return job_counts(run_workflow(workdir, "--dry-run", "--quiet", "rules").stdout)


def base_config(datadir):
    return {"path": {"dataPath": str(datadir)}, "scraper": {"scraper": "XYZ"}, "reference": ZBL}


def test_network_sweep_computes_each_descriptor_once(tmp_path, datadir, repo_root):
    cfg = base_config(datadir) | {"sweep": {"pytorch.layer_sizes": LAYERS, "pytorch.seed": [0, 1]}}
    jobs = planned_jobs(tmp_path, cfg)
    assert jobs["train"] == 6
    assert jobs["evaluate_fit"] == 6
    assert jobs["import_group"] == len(GROUPS)
    assert jobs["compute_descriptors"] == len(GROUPS)  # shared by all six fits
    assert jobs["leaderboard"] == 1 and jobs["fits_table"] == 1
    assert "train_member" not in jobs


def test_bispectrum_sweep_computes_one_set_per_setting(tmp_path, datadir, repo_root):
    cfg = base_config(datadir) | {
        "sweep": {"bispectrum.twojmax": [4, 6], "pytorch.layer_sizes": LAYERS[:2]},
        "committee": {"members": 2},
    }
    jobs = planned_jobs(tmp_path, cfg)
    assert jobs["train"] == 4
    assert jobs["train_member"] == 4  # one more member per fit, each its own job
    assert jobs["compute_descriptors"] == 2 * len(GROUPS)  # per group per twojmax
    assert jobs["import_group"] == len(GROUPS)
    assert jobs["md_committee"] == 4 and jobs["plot_committee"] == 4


def test_single_fit_has_no_leaderboard(tmp_path, datadir, repo_root):
    jobs = planned_jobs(tmp_path, base_config(datadir))
    assert jobs["train"] == 1 and jobs["compute_descriptors"] == len(GROUPS)
    assert "leaderboard" not in jobs and "fits_table" not in jobs


# ----------------------------------------------------------------------------- leaderboard


def write_metrics(path, groups, test_force_mae, test_energy_mae, forces=True):
    """A metrics file in FitSNAP's format: *ALL rows, then each group's (values made up)."""
    rows = []
    for g, name in enumerate(["*ALL", *groups]):
        for label, scale in (("Train", 0.5), ("Test", 1.0)):
            e = test_energy_mae * scale * (1 + g)
            f = test_force_mae * scale * (1 + g)
            rows.append((name, label, "Energy", 10, e, 2 * e))
            rows.append((name, label, "Force", 100 if forces else 0, f if forces else np.nan, 2 * f if forces else np.nan))
    path.write_text(format_metrics(pd.DataFrame(rows, columns=METRICS_COLUMNS)))


def make_fit_files(folder, hidden, test_force_mae, test_energy_mae, drift, seconds, forces=True):
    folder.mkdir(parents=True)
    write_metrics(folder / "metrics.dat", ["Liquid", "Volume_BCC"], test_force_mae, test_energy_mae, forces)
    torch.manual_seed(0)
    save_model(folder / "model.pt", AtomicEnergyModel(30, hidden, ["Ta"]), epochs_trained=12, epoch=9, selection="best")
    bench = []
    for k, s in enumerate(seconds):
        path = folder / f"bench{k}.tsv"
        path.write_text(f"s\th:m:s\tmax_rss\n{s}\t0:00:{s}\t100\n")
        bench.append(path)
    (folder / "summary.json").write_text(json.dumps({"energy_drift_eV_per_atom_per_ps": drift}))
    return {"metrics": folder / "metrics.dat", "model": folder / "model.pt", "benchmarks": bench, "md_summary": folder / "summary.json"}


def test_leaderboard_contents_and_order(tmp_path):
    specs = {  # fit: hidden, test force MAE, test energy MAE, drift, seconds per member
        "a": ([8], 0.30, 0.010, -2e-5, [4.0]),
        "b": ([16, 16], 0.10, 0.030, 1e-6, [5.0, 7.0]),
        "c": ([4], 0.20, 0.020, -1e-7, [3.0]),
        "d": ([4], 0.0, 0.005, 0.0, [2.0]),  # an energy-only fit: no force error at all
    }
    rows = []
    for fit, (hidden, fmae, emae, drift, secs) in specs.items():
        src = make_fit_files(tmp_path / fit, hidden, fmae, emae, drift, secs, forces=fit != "d")
        mdc = None
        if fit == "b":
            mdc = tmp_path / "b" / "committee.json"
            mdc.write_text(json.dumps({"max_force_std": 0.25, "candidates": 3}))
        rows.append(lb.fit_row(fit, **src, md_committee=mdc, settings={"pytorch.layer_sizes": ["num_desc", *hidden, 1]}, committee=len(secs)))
    table = lb.leaderboard_table(rows, "test_force_mae")
    assert list(table["fit"]) == ["b", "c", "a", "d"]  # no force error: last
    assert list(table["rank"]) == [1, 2, 3, 4]
    b = table.iloc[0]
    assert b["test_force_mae"] == pytest.approx(0.10) and b["test_force_rmse"] == pytest.approx(0.20)
    assert b["train_force_mae"] == pytest.approx(0.05) and b["test_energy_mae"] == pytest.approx(0.03)
    assert b["Liquid:test_force_mae"] == pytest.approx(0.20)  # the first group: 2x *ALL by construction
    assert b["Volume_BCC:train_energy_rmse"] == pytest.approx(2 * 0.5 * 0.03 * 3)
    assert b["parameters"] == 30 * 16 + 16 + 16 * 16 + 16 + 16 + 1
    assert b["epochs"] == 12 and b["selected_epoch"] == 9
    assert b["train_wall_s"] == 5.0 and b["committee_wall_s"] == 12.0 and b["committee"] == 2
    assert b["md_drift"] == 1e-6 and b["md_max_force_std"] == 0.25 and b["md_candidates"] == 3
    assert b["pytorch.layer_sizes"] == "[num_desc, 16, 16, 1]"
    assert np.isnan(table.iloc[1]["md_max_force_std"])
    assert np.isnan(table.iloc[3]["test_force_mae"])
    # other criteria
    assert list(lb.leaderboard_table(rows, "test_energy_mae")["fit"]) == ["d", "a", "c", "b"]
    assert list(lb.leaderboard_table(rows, "md_drift")["fit"]) == ["d", "c", "b", "a"]  # by size
    assert list(lb.leaderboard_table(rows, "parameters")["fit"])[-1] == "b"
    # Markdown: the overall table and the per-group tables
    md = lb.markdown(table, "test_force_mae")
    assert "ranked by `test_force_mae`" in md
    assert md.index("| b ") < md.index("| c ") < md.index("| a ")
    assert "## Test force MAE per group" in md and "Volume_BCC" in md
    fig = lb.figure(table, "test_force_mae")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["b", "c", "a", "d"]


def test_leaderboard_without_benchmark_or_md(tmp_path):
    src = make_fit_files(tmp_path / "x", [8], 0.1, 0.01, 0.0, [])
    row = lb.fit_row("x", src["metrics"], src["model"], [tmp_path / "missing.tsv"])
    assert np.isnan(row["train_wall_s"]) and np.isnan(row["md_drift"])


def test_train_command_takes_the_named_fit_of_a_sweep(tmp_path, datadir):
    from potflow.training.launch import job_from_config

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base_config(datadir) | {"sweep": {"pytorch.layer_sizes": LAYERS[:2]}}))
    cfg, folders, paths = job_from_config(path, tmp_path / "results", "layer_sizes-16x16")
    assert cfg["pytorch"]["layer_sizes"] == ["num_desc", 16, 16, 1]
    assert paths.model == tmp_path / "results" / "fits" / "layer_sizes-16x16" / "model.pt"
    assert len(folders) == len(GROUPS)
    with pytest.raises(PotflowInputError, match="has no fit 'default'"):
        job_from_config(path, tmp_path / "results", "default")
    # a config of one fit trains under the name given
    path.write_text(yaml.safe_dump(base_config(datadir)))
    cfg, _, paths = job_from_config(path, tmp_path / "results", "mine")
    assert paths.model.parent.name == "mine" and cfg["pytorch"]["layer_sizes"] == ["num_desc", 64, 64, 1]
