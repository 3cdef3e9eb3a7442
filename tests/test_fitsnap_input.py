"""FitSNAP input files: conversion to potflow configs, the from-fitsnap command, the workflow."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from potflow import cli
from potflow.config.fitsnap import load_any_config, read_fitsnap_input, to_yaml, workflow_config
from potflow.config.groups import fit_groups, group_options
from potflow.config.load import prepare_config
from potflow.errors import PotflowInputError

DATA = Path(__file__).resolve().parent / "data" / "fitsnap"
TA_IN = DATA / "Ta-pytorch.in"
WBE_IN = DATA / "WBe-pytorch.in"


def write_in(folder, text, name="input.in"):
    path = Path(folder) / name
    path.write_text(text)
    return path


def kinds(conv):
    return {(n.section, n.key): n.kind for n in conv.notices}


MINIMAL = """\
[BISPECTRUM]
numTypes = 1
type = Ta
bikflag = 1
dgradflag = 1
[PYTORCH]
layer_sizes = num_desc 8 1
[SOLVER]
solver = PYTORCH
"""


def edit(old, new, text=MINIMAL):
    """MINIMAL (or ``text``) with one change."""
    assert old in text
    return text.replace(old, new)


# --- the two example inputs, value by value ----------------------------------------------


def test_ta_example_converts_value_by_value(shared_data):
    conv = read_fitsnap_input(TA_IN)
    groups = {
        name: {"training_size": 0.7, "testing_size": 0.3, "eweight": e, "fweight": f, "vweight": v}
        for name, e, f, v in [
            ("Displaced_A15", 100.0, 1.0, 1e-8),
            ("Displaced_BCC", 100.0, 1.0, 1e-8),
            ("Displaced_FCC", 100.0, 1.0, 1e-8),
            ("Elastic_BCC", 1e-8, 1e-8, 1e-4),
            ("Elastic_FCC", 1e-9, 1e-9, 1e-9),
            ("GSF_110", 100.0, 1.0, 1e-8),
            ("GSF_112", 100.0, 1.0, 1e-8),
            ("Liquid", 467.0, 1.0, 1e-8),
            ("Surface", 100.0, 1.0, 1e-8),
            ("Volume_A15", 1.0, 1e-9, 1e-9),
            ("Volume_BCC", 1.0, 1e-9, 1e-9),
            ("Volume_FCC", 1.0, 1e-9, 1e-9),
        ]
    }
    expected = {
        "bispectrum": {
            "numTypes": 1, "twojmax": 6, "rcutfac": 4.67637, "rfac0": 0.99363, "rmin0": 0.0,
            "wj": [1.0], "radelem": [0.5], "type": ["Ta"], "wselfallflag": 0, "chemflag": 0,
            "bzeroflag": 1, "quadraticflag": 0, "switchflag": 1, "bikflag": 1, "dgradflag": 1,
        },
        "calculator": {
            "calculator": "LAMMPSSNAP", "energy": 1, "force": 1, "stress": 0,
            "per_atom_energy": 1, "nonlinear": 1,
        },
        "eshift": {"Ta": 0.0},
        "pytorch": {
            "layer_sizes": ["num_desc", 64, 64, 1], "learning_rate": 5e-5, "num_epochs": 200,
            "batch_size": 4, "save_state_output": "Ta_Pytorch.pt", "energy_weight": 1e-2,
            "force_weight": 1.0, "manual_seed_flag": 1,
        },
        "solver": {"solver": "PYTORCH"},
        "scraper": {"scraper": "JSON"},
        "path": {"dataPath": str((shared_data / "Ta_JSON").resolve())},
        "outfile": {"metrics": "Ta_metrics.md", "potential": "Ta_pot"},
        "reference": {
            "units": "metal", "atom_style": "atomic",
            "pair_style": "hybrid/overlay zero 10.0 zbl 4.0 4.8",
            "pair_coeff": ["* * zero", "* * zbl 73 73"],
        },
        "groups": {
            "group_sections":
                ["name", "training_size", "testing_size", "eweight", "fweight", "vweight"],
            "group_types": ["str", "float", "float", "float", "float", "float"],
            "smartweights": 0, "random_sampling": 0, **groups,
        },
        "extras": {"dump_peratom": 1, "dump_perconfig": 1, "dump_configs": 1},
    }  # fmt: skip
    assert conv.config == expected
    # Typed as FitSNAP reads them: ints stay ints, sizes and weights are floats.
    assert type(conv.config["bispectrum"]["twojmax"]) is int
    assert type(conv.config["groups"]["Liquid"]["fweight"]) is float
    assert kinds(conv) == {
        ("SOLVER", "compute_testerrs"): "ignored",
        ("SOLVER", "detailed_errors"): "ignored",
        ("EXTRAS", "dump_descriptors"): "ignored",
        ("EXTRAS", "dump_truth"): "ignored",
        ("EXTRAS", "dump_weights"): "ignored",
        ("MEMORY", "override"): "ignored",
    }
    assert conv.unsupported == [] and conv.defaults == []
    cfg = prepare_config(conv.config)
    # All 12 folders are listed, so all are fitted; [PYTORCH] global weights override the rows.
    assert len(fit_groups(cfg)) == 12 and "exclude" not in conv.config["groups"]
    opts = group_options(cfg, "Liquid")
    assert (opts["eweight"], opts["fweight"], opts["training_size"]) == (1e-2, 1.0, 0.7)


def test_wbe_example_converts_value_by_value(shared_data):
    conv = read_fitsnap_input(WBE_IN)
    cfg = conv.config
    assert cfg["bispectrum"] == {
        "numTypes": 2, "twojmax": 6, "rcutfac": 4.812302818, "rfac0": 0.99363, "rmin0": 0.0,
        "wj": [1.0, 0.9590493408], "radelem": [0.5, 0.417932464], "type": ["W", "Be"],
        "wselfallflag": 0, "chemflag": 0, "bzeroflag": 1, "quadraticflag": 0, "bikflag": 1,
        "dgradflag": 1,
    }  # fmt: skip
    assert cfg["eshift"] == {"W": -4.5, "Be": -0.25}
    assert cfg["pytorch"] == {
        "layer_sizes": ["num_desc", 64, 64, 1], "learning_rate": 5e-5, "num_epochs": 20,
        "batch_size": 4, "save_state_output": "WBe_Pytorch.pt", "multi_element_option": 2,
        "num_elements": 2, "manual_seed_flag": 1, "shuffle_flag": 1, "dtype": "float64",
    }  # fmt: skip
    assert cfg["reference"]["pair_coeff"] == [
        "* * zero", "1 1 zbl 74 74", "1 2 zbl 74 4", "2 2 zbl 4 4",
    ]  # fmt: skip
    assert cfg["path"]["dataPath"] == str((shared_data / "WBe_JSON").resolve())
    assert cfg["outfile"] == {"metrics": "WBe_metrics.md", "potential": "WBe_pot"}
    assert cfg["extras"] == {"dump_peratom": 1, "dump_perconfig": 1, "dump_configs": 0}
    groups = cfg["groups"]
    assert (groups["random_sampling"], groups["random_seed"], groups["smartweights"]) == (1, 42, 0)
    # Fractions and counts are kept as the numbers written.
    assert groups["001FreeSurf"] == {
        "training_size": 0.7, "testing_size": 0.3, "eweight": 40.0, "fweight": 70.0,
        "vweight": 1e-12,
    }  # fmt: skip
    assert groups["EOS_FCC"] == {
        "training_size": 200.0, "testing_size": 100.0, "eweight": 340.0, "fweight": 1500.0,
        "vweight": 1e-12,
    }  # fmt: skip
    assert groups["DFT_MD_300K"]["fweight"] == 0.002
    # FitSNAP fits only the listed groups: the two folders left out are excluded.
    assert groups["exclude"] == ["EOS_Data", "slice_sample"]
    prepared = prepare_config(cfg)
    fitted = fit_groups(prepared)
    assert len(fitted) == 42 and "slice_sample" not in fitted and "EOS_Data" not in fitted
    assert group_options(prepared, "EOS_BCC")["training_size"] == 70.0
    assert kinds(conv) == {("MEMORY", "memory"): "ignored", ("MEMORY", "override"): "ignored"}


@pytest.mark.parametrize("path", [TA_IN, WBE_IN], ids=["Ta", "WBe"])
def test_round_trip_through_yaml_and_prepare_config(path, tmp_path, shared_data):
    conv = read_fitsnap_input(path)
    text = to_yaml(conv)
    back = yaml.safe_load(text)
    assert back == conv.config
    prepared = prepare_config(back)
    assert prepared == prepare_config(conv.config)
    # Preparing twice changes nothing (the workflow prepares the converted config again).
    assert prepare_config(prepared) == prepared
    # The YAML file loads through the ordinary YAML path too.
    out = tmp_path / "config.yaml"
    out.write_text(text)
    assert load_any_config(out) == prepared
    assert load_any_config(path, report=lambda line: None) == prepared
    # Every notice is in the file as a comment.
    for notice in conv.notices:
        assert f"#   {notice}" in text


# --- what is not converted is reported by name --------------------------------------------


UNSUPPORTED = (
    MINIMAL.replace("bikflag = 1", "bikflag = 1\nswitchinnerflag = 1\nsinner = 1.5")
    + """\
numepochs = 5
[SCRAPER]
scraper = JSON
property_array = Energy energy Metal Metal
[ACE]
ranks = 1 2
[OUTFILE]
peratom = my_atoms.dat
perconfig = perconfig.dat
[GROUPS]
group_sections = name training_size testing_size eweight fweight vweight
group_types = str float float float float float
BOLTZ = 300
[MEMORY]
override = 0
"""
)


def test_unsupported_keys_are_reported_by_name(tmp_path):
    path = write_in(tmp_path, UNSUPPORTED)
    conv = read_fitsnap_input(path)
    assert kinds(conv) == {
        ("BISPECTRUM", "switchinnerflag"): "unsupported",
        ("BISPECTRUM", "sinner"): "unsupported",
        ("SOLVER", "numepochs"): "unsupported",
        ("SCRAPER", "property_array"): "unsupported",
        ("ACE", ""): "unsupported",
        ("OUTFILE", "peratom"): "unsupported",
        ("OUTFILE", "perconfig"): "ignored",
        ("GROUPS", "BOLTZ"): "unsupported",
        ("GROUPS", ""): "note",  # no group rows: every group in dataPath is fitted
        ("MEMORY", "override"): "ignored",
    }
    text = {str(n) for n in conv.notices}
    assert (
        "[BISPECTRUM] switchinnerflag = 1: unsupported: inner cutoff switching is not supported"
        in text
    )
    assert (
        "[OUTFILE] peratom = my_atoms.dat: unsupported: potflow always writes peratom.dat" in text
    )
    with pytest.raises(PotflowInputError) as err:
        read_fitsnap_input(path, strict=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))
    for name in (
        "[BISPECTRUM] switchinnerflag", "[BISPECTRUM] sinner", "[SOLVER] numepochs",
        "[SCRAPER] property_array", "[ACE]", "[OUTFILE] peratom", "[GROUPS] BOLTZ",
    ):  # fmt: skip
        assert name in msg
    assert "perconfig" not in msg and "override" not in msg


def test_switches_that_are_off_are_harmless(tmp_path):
    text = MINIMAL.replace(
        "bikflag = 1", "bikflag = 1\nswitchinnerflag = 0\nsinner = 1.5\nalloyflag = 0"
    )
    conv = read_fitsnap_input(write_in(tmp_path, text + "[CALCULATOR]\nper_atom_scalar = 0\n"))
    assert kinds(conv)[("BISPECTRUM", "switchinnerflag")] == "ignored"
    assert kinds(conv)[("BISPECTRUM", "sinner")] == "ignored"
    assert kinds(conv)[("BISPECTRUM", "alloyflag")] == "ignored"
    assert kinds(conv)[("CALCULATOR", "per_atom_scalar")] == "ignored"


def test_misspelled_key_gets_a_hint(tmp_path):
    conv = read_fitsnap_input(write_in(tmp_path, MINIMAL.replace("numTypes", "numtypes")))
    (notice,) = [n for n in conv.notices if n.key == "numtypes"]
    assert notice.kind == "unsupported" and "did you mean numTypes?" in notice.reason


def test_output_folder_is_reported(tmp_path):
    text = edit("layer_sizes", "save_state_output = runs/Ta.pt\nlayer_sizes")
    conv = read_fitsnap_input(write_in(tmp_path, text))
    assert conv.config["pytorch"]["save_state_output"] == "Ta.pt"
    assert kinds(conv)[("PYTORCH", "save_state_output")] == "note"


def test_eshift_of_an_element_not_fitted_is_reported(tmp_path):
    conv = read_fitsnap_input(write_in(tmp_path, MINIMAL + "[ESHIFT]\nTa = -2.5\nW = -4.0\n"))
    assert conv.config["eshift"] == {"Ta": -2.5}
    assert kinds(conv)[("ESHIFT", "W")] == "ignored"


# --- linear solvers and bad input: one line naming file, section and key -------------------


NO_PYTORCH = edit("[PYTORCH]\nlayer_sizes = num_desc 8 1\n", "")
GROUP_TABLE = "[GROUPS]\ngroup_sections = name training_size testing_size\n"


LINEAR = edit("PYTORCH", "SVD", NO_PYTORCH)


@pytest.mark.parametrize(
    "text, solver, alpha",
    [
        pytest.param(LINEAR, "SVD", None, id="svd"),
        pytest.param(edit("[SOLVER]\nsolver = PYTORCH\n", "", NO_PYTORCH), "SVD", None, id="fitsnap-default-svd"),
        pytest.param(
            edit("SVD", "RIDGE", LINEAR) + "[RIDGE]\nalpha = 1e-6\nlocal_solver = 1\n", "RIDGE", 1e-6, id="ridge"
        ),
    ],
)  # fmt: skip
def test_linear_solvers_convert(tmp_path, text, solver, alpha):
    """FitSNAP's SVD and RIDGE (with [RIDGE] alpha) become a linear fit; no network defaults
    are written for it (they would be network-only keys in a linear fit)."""
    conv = read_fitsnap_input(write_in(tmp_path, text))
    assert conv.config["solver"] == {"solver": solver}
    assert "pytorch" not in conv.config
    if alpha is not None:
        assert conv.config["ridge"] == {"alpha": alpha}
        assert kinds(conv)[("RIDGE", "local_solver")] == "ignored"


@pytest.mark.parametrize(
    "text, where",
    [
        pytest.param(edit("SVD", "LASSO", LINEAR), "[SOLVER] solver: FitSNAP's solver LASSO is not implemented", id="lasso"),
        pytest.param(edit("SVD", "QR", LINEAR), "[SOLVER] solver: unknown solver QR", id="unknown"),
        pytest.param(MINIMAL + "[LASSO]\nalpha = 1e-6\n", "[LASSO]: section of the LASSO solver", id="lasso-section"),
        pytest.param(edit("solver = PYTORCH", "solver = SVD"), "[PYTORCH]: section of the PYTORCH solver", id="svd-pytorch"),
        pytest.param(LINEAR + "[RIDGE]\nalpha = 1e-6\n", "[RIDGE]: section of the RIDGE solver", id="svd-ridge"),
        pytest.param(
            edit("SVD", "RIDGE", LINEAR) + "[RIDGE]\nalpha = -1\n", "[RIDGE] alpha: -1.0 is less than the minimum", id="negative-alpha"
        ),
        pytest.param(NO_PYTORCH, "[PYTORCH]: section missing", id="no-pytorch"),
    ],
)  # fmt: skip
def test_other_solvers_and_bad_solver_input_are_refused(tmp_path, text, where):
    path = write_in(tmp_path, text)
    with pytest.raises(PotflowInputError) as err:
        read_fitsnap_input(path)
    msg = str(err.value)
    assert where in msg and msg.startswith(str(path)) and "\n" not in msg


BAD_INPUTS = {
    "no-section-header": ("numTypes = 1\n", "line 1: not a FitSNAP input file"),
    "not-ini": (
        MINIMAL + "just words\n",
        "line 10: not a FitSNAP input file: cannot read 'just words'",
    ),
    "duplicate-section": (
        MINIMAL + "[BISPECTRUM]\ntwojmax = 6\n",
        "line 10: section [BISPECTRUM] appears twice",
    ),
    "duplicate-section-case": (MINIMAL + "[pytorch]\n", "section [PYTORCH] appears twice"),
    "duplicate-key": (
        edit("type = Ta", "type = Ta\ntype = W"),
        "line 4: [BISPECTRUM] type appears twice",
    ),
    "bad-int": (edit("numTypes = 1", "numTypes = one"), "[BISPECTRUM] numTypes: 'one' is not an"),
    "twojmax-per-element": (
        edit("numTypes = 1", "twojmax = 6 8"),
        "[BISPECTRUM] twojmax: per-element values [6, 8]",
    ),
    "bad-flag": (edit("bikflag = 1", "bikflag = maybe"), "[BISPECTRUM] bikflag: 'maybe' is not"),
    "no-type": (edit("type = Ta\n", ""), "[BISPECTRUM] type: missing"),
    "no-bispectrum": ("[PYTORCH]\nlayer_sizes = num_desc 8\n", "[BISPECTRUM]: section missing"),
    "numtypes-mismatch": (
        edit("numTypes = 1", "numTypes = 2"),
        "[BISPECTRUM] type: has 1 entries but numTypes is 2",
    ),
    "layer-sizes-order": (
        edit("num_desc 8 1", "8 num_desc 1"),
        "[PYTORCH] layer_sizes: only the first entry may",
    ),
    "layer-sizes-word": (
        edit("num_desc 8 1", "num_desc 8 x 1"),
        "[PYTORCH] layer_sizes: 'x' is not an integer",
    ),
    "negative-learning-rate": (
        edit("layer_sizes", "learning_rate = -1\nlayer_sizes"),
        "[PYTORCH] learning_rate",
    ),
    "vasp-scraper": (
        MINIMAL + "[SCRAPER]\nscraper = VASP\n",
        "[SCRAPER] scraper: scraper 'VASP' not supported",
    ),
    "ace-calculator": (
        MINIMAL + "[CALCULATOR]\ncalculator = LAMMPSPACE\n",
        "[CALCULATOR] calculator: calculator 'LAMMPSPACE' not supported",
    ),
    "group-row-columns": (
        MINIMAL + GROUP_TABLE + "group_types = str float float\nBulk = 0.7\n",
        "[GROUPS] Bulk: has 1 values but group_sections names 2",
    ),
    "group-types-length": (
        MINIMAL + GROUP_TABLE + "group_types = str float\n",
        "[GROUPS] group_types: has 2 entries but group_sections has 3",
    ),
    "random-seed": (
        MINIMAL + "[GROUPS]\nrandom_seed = 1.5\n",
        "[GROUPS] random_seed: '1.5' is not a whole",
    ),
}


@pytest.mark.parametrize("text, fragment", BAD_INPUTS.values(), ids=BAD_INPUTS)
def test_bad_input_is_one_line_naming_file_and_key(tmp_path, text, fragment):
    path = write_in(tmp_path, text)
    with pytest.raises(PotflowInputError) as err:
        read_fitsnap_input(path)
    msg = str(err.value)
    assert fragment in msg, msg
    assert msg.startswith(str(path)) and "\n" not in msg


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(PotflowInputError, match="cannot read FitSNAP input"):
        read_fitsnap_input(tmp_path / "nope.in")


def test_listed_group_without_data_is_refused(tmp_path):
    (tmp_path / "JSON" / "Bulk").mkdir(parents=True)
    text = MINIMAL + (
        "[GROUPS]\ngroup_sections = name training_size testing_size\n"
        "group_types = str float float\nBulk = 0.7 0.3\nSurface = 0.7 0.3\n"
    )
    with pytest.raises(PotflowInputError, match=r"\[GROUPS\]: groups with no data in .*: Surface"):
        read_fitsnap_input(write_in(tmp_path, text))


# --- FitSNAP semantics kept ---------------------------------------------------------------


def test_absent_keys_take_fitsnap_defaults_where_they_differ(tmp_path):
    text = "[BISPECTRUM]\ntype = Ta\n[PYTORCH]\n"
    conv = read_fitsnap_input(write_in(tmp_path, text))
    cfg = conv.config
    assert cfg["bispectrum"]["bzeroflag"] == 0
    assert cfg["scraper"]["scraper"] == "JSON"
    assert cfg["path"]["dataPath"] == str(tmp_path.resolve() / "JSON")
    assert cfg["pytorch"]["layer_sizes"] == ["num_desc", 512, 512, 1]
    assert (cfg["pytorch"]["learning_rate"], cfg["pytorch"]["num_epochs"]) == (1e-2, 10)
    assert cfg["outfile"] == {"metrics": "fitsnap_metrics", "potential": "fitsnap_potential"}
    assert cfg["extras"] == {"dump_peratom": 0, "dump_perconfig": 0, "dump_configs": 0}
    assert cfg["solver"] == {"solver": "PYTORCH"}
    assert "bispectrum.bzeroflag" in conv.defaults and "scraper.scraper" in conv.defaults
    # Written values are never replaced by defaults.
    conv = read_fitsnap_input(TA_IN)
    assert conv.config["bispectrum"]["bzeroflag"] == 1


def test_old_size_column_and_counts(tmp_path):
    text = MINIMAL + (
        "[GROUPS]\ngroup_sections = name size eweight fweight vweight\n"
        "group_types = str float float float float\nBulk = 0.7 1 1 0\nSurface = 20 2 1 0\n"
    )
    groups = read_fitsnap_input(write_in(tmp_path, text)).config["groups"]
    # A fraction trains on that share and tests on the rest; a count tests on nothing.
    assert groups["Bulk"] == {
        "training_size": 0.7,
        "testing_size": 0.3,
        "eweight": 1.0,
        "fweight": 1.0,
        "vweight": 0.0,
    }
    assert groups["Surface"] == {
        "training_size": 20.0,
        "eweight": 2.0,
        "fweight": 1.0,
        "vweight": 0.0,
    }


def test_group_file_rows(tmp_path):
    (tmp_path / "groups.txt").write_text(
        "# name train test\nBulk 0.8 0.2\n\nSurface 10 5  # counts\n"
    )
    text = MINIMAL + (
        "[PATH]\ndataPath = data\ngroupFile = groups.txt\n"
        + GROUP_TABLE
        + "group_types = str float float\n"
    )
    groups = read_fitsnap_input(write_in(tmp_path, text)).config["groups"]
    assert groups["Bulk"] == {"training_size": 0.8, "testing_size": 0.2}
    assert groups["Surface"] == {"training_size": 10.0, "testing_size": 5.0}


def test_paths_resolve_against_the_input_folder(tmp_path, monkeypatch):
    (tmp_path / "project" / "data").mkdir(parents=True)
    text = edit("layer_sizes", "save_state_input = old/model.pt\nlayer_sizes")
    text += "[PATH]\ndataPath = data\n"
    path = write_in(tmp_path / "project", text)
    monkeypatch.chdir(tmp_path)  # a different working directory changes nothing
    cfg = read_fitsnap_input(Path("project") / "input.in").config
    assert cfg["path"]["dataPath"] == str((tmp_path / "project" / "data").resolve())
    assert cfg["pytorch"]["save_state_input"] == str(path.parent.resolve() / "old" / "model.pt")


def test_load_any_config_by_suffix_and_content(tmp_path):
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(yaml.safe_dump({"bispectrum": {"type": ["W"]}}))
    assert load_any_config(yaml_path)["bispectrum"]["type"] == ["W"]
    # A FitSNAP input under another suffix is recognised by its first [SECTION] line.
    odd = write_in(tmp_path, "# FitSNAP input\n\n" + MINIMAL, name="fit.txt")
    lines = []
    cfg = load_any_config(odd, report=lines.append)
    assert cfg["bispectrum"]["type"] == ["Ta"] and cfg["pytorch"]["layer_sizes"] == [
        "num_desc",
        8,
        1,
    ]
    assert lines and all(line.startswith(f"potflow: {odd}: [") for line in lines)


def test_workflow_config_replaces_config_in_place_with_overrides():
    config = {"fitsnap_input": str(TA_IN), "pytorch": {"num_epochs": 3}}
    same = config
    workflow_config(config, report=lambda line: None)
    assert config is same and "fitsnap_input" not in config
    assert config["pytorch"]["num_epochs"] == 3  # the override wins
    assert config["pytorch"]["learning_rate"] == 5e-5  # the rest comes from the input file
    assert config["reference"]["pair_coeff"] == ["* * zero", "* * zbl 73 73"]


# --- the command ---------------------------------------------------------------------------


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "potflow.cli", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_writes_the_yaml_file(tmp_path, shared_data):
    out = tmp_path / "cfg" / "config.yaml"
    res = run_cli("from-fitsnap", TA_IN, "-o", out, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    cfg = yaml.safe_load(out.read_text())
    assert cfg == read_fitsnap_input(TA_IN).config
    assert "[MEMORY] override = 0: ignored" in res.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["config.yaml"]  # no temp files
    # Without -o the YAML goes to standard output.
    res = run_cli("from-fitsnap", WBE_IN, cwd=tmp_path)
    assert (
        res.returncode == 0 and yaml.safe_load(res.stdout) == read_fitsnap_input(WBE_IN).config
    )


def test_cli_bad_input_one_line_and_no_output(tmp_path):
    bad = write_in(tmp_path, MINIMAL.replace("solver = PYTORCH", "solver = LASSO"))
    out = tmp_path / "out.yaml"
    res = run_cli("from-fitsnap", bad, "-o", out, cwd=tmp_path)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "[SOLVER] solver: FitSNAP's solver LASSO is not implemented" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.in"]
    # --strict turns unsupported keys into the error.
    res = run_cli(
        "from-fitsnap", write_in(tmp_path, UNSUPPORTED), "--strict", "-o", out, cwd=tmp_path
    )
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1
    assert "[BISPECTRUM] switchinnerflag" in res.stderr and not out.exists()


def test_cli_keeps_an_existing_file_unless_forced(tmp_path):
    out = tmp_path / "config.yaml"
    out.write_text("mine\n")
    res = run_cli("from-fitsnap", TA_IN, "-o", out, cwd=tmp_path)
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1
    assert "use --force" in res.stderr and out.read_text() == "mine\n"
    res = run_cli("from-fitsnap", TA_IN, "-o", out, "--force", cwd=tmp_path)
    assert (
        res.returncode == 0 and yaml.safe_load(out.read_text())["outfile"]["potential"] == "Ta_pot"
    )


def test_cli_write_failure_leaves_nothing(tmp_path, monkeypatch, capsys):
    """A full disk (the rename fails) gives one line and no file, not a truncated one."""

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    out = tmp_path / "config.yaml"
    assert cli.main(["from-fitsnap", str(TA_IN), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"potflow from-fitsnap: error: {out}: cannot write (")
    assert "No space left on device" in err[0] and err[0].endswith("nothing was written")
    assert list(tmp_path.iterdir()) == []


def test_cli_help_lists_commands(tmp_path):
    res = run_cli("--help", cwd=tmp_path)
    assert res.returncode == 0 and "from-fitsnap" in res.stdout
    res = run_cli("from-fitsnap", "--help", cwd=tmp_path)
    assert res.returncode == 0 and "--strict" in res.stdout
    res = run_cli("no-such-command", cwd=tmp_path)
    assert res.returncode != 0


# --- the workflow takes the .in file directly ---------------------------------------------


def _fake_json(path, symbol):
    rec = {
        "Energy": -10.0, "NumAtoms": 1, "AtomTypes": [symbol], "Positions": [[0.0, 0.0, 0.0]],
        "Forces": [[0.0, 0.0, 0.0]], "Lattice": [[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]],
    }  # fmt: skip
    path.write_text("# test\n" + json.dumps({"Dataset": {"Data": [rec]}}))


def dry_run(snakefile, infile, cwd):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(snakefile),
         "--config", f"fitsnap_input={infile}"],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_snakemake_dry_run_with_fitsnap_input(tmp_path, repo_root):
    for group in ("Bulk", "Surface", "Unlisted"):
        (tmp_path / "data" / group).mkdir(parents=True)
        for i in range(2):
            _fake_json(tmp_path / "data" / group / f"{i}.json", "Ta")
    (tmp_path / "inputs").mkdir()
    settings = TA_IN.read_text().split("[GROUPS]")[0]
    text = edit("../../../../shared/data/Ta_JSON", "../data", settings) + (
        "[GROUPS]\ngroup_sections = name training_size testing_size eweight fweight vweight\n"
        "group_types = str float float float float float\n"
        "Bulk = 0.7 0.3 1 1 0\nSurface = 1 0 1 1 0\n[MEMORY]\noverride = 0\n"
    )
    infile = write_in(tmp_path / "inputs", text, name="Ta.in")
    work = tmp_path / "work"  # no config.yaml here: the .in file is the whole config
    work.mkdir()
    res = dry_run(repo_root / "Snakefile", infile, work)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "results/data/Bulk.npz" in out and "results/data/Surface.npz" in out
    assert "Unlisted" not in out  # FitSNAP fits only the listed groups
    assert f"potflow: {infile}: [MEMORY] override = 0: ignored" in out
    # A solver potflow does not implement stops the workflow with the one-line message.
    bad = write_in(tmp_path / "inputs", edit("= PYTORCH", "= LASSO", text), name="bad.in")
    res = dry_run(repo_root / "Snakefile", bad, work)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "[SOLVER] solver: FitSNAP's solver LASSO is not implemented; use PYTORCH, SVD, RIDGE" in out
    # A linear one (no [PYTORCH] section) plans the linear fit and its pair_style snap export.
    linear = re.sub(r"\[PYTORCH\][^\[]*", "", edit("= PYTORCH", "= SVD", text))
    res = dry_run(repo_root / "Snakefile", write_in(tmp_path / "inputs", linear, name="svd.in"), work)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "export_snap" in out and ".snapcoeff" in out
