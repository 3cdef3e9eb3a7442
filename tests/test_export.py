"""Export to LAMMPS ML-IAP: LAMMPS running the files reproduces the torch model exactly."""

import copy
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import potflow.lammps.export
from potflow.config.load import prepare_config
from potflow.data.structures import parse_fitsnap_json
from potflow.descriptors.compute import SnapCalculator
from potflow.descriptors.snap_index import duplicate_descriptor_sets, num_descriptors
from potflow.errors import PotflowInputError
from potflow.lammps.export import export_model, export_model_file, sha256
from potflow.lammps.inputs import (
    export_paths,
    format_descriptor_file,
    include_commands,
    pair_commands,
)
from potflow.lammps.mliap_model import (
    check_lammps_activation,
    format_model_file,
    lammps_network,
    read_model_file,
)
from potflow.lammps.self_check import lammps_single_point, torch_single_point
from potflow.models.files import load_model, save_model
from potflow.models.network import AtomicEnergyModel

TOL_E = 1e-8  # eV
TOL_F = 1e-8  # eV/A

SYSTEMS = {
    "Ta": {
        "bispectrum": {"type": ["Ta"], "twojmax": 4},
        "zbl": ["* * zero", "* * zbl 73 73"],
        "fit": ["Ta_JSON/Displaced_BCC/BCC_2.json", "Ta_JSON/Displaced_FCC/FCC_1.json"],
        "held_out": [
            "Ta_JSON/Displaced_BCC/BCC_1.json",
            "Ta_JSON/Surface/112_surface_nonrelax.json",
        ],
    },
    "WBe": {
        "bispectrum": {
            "numTypes": 2,
            "type": ["W", "Be"],
            "wj": [1.0, 0.959],
            "radelem": [0.5, 0.417],
            "rcutfac": 4.8123,
            "twojmax": 4,
        },  # fmt: skip
        "zbl": ["* * zero", "1 1 zbl 74 74", "1 2 zbl 74 4", "2 2 zbl 4 4"],
        "fit": [
            "WBe_JSON/DFT_MD_1000K/WBeB2_MD1000K_101.json",
            "WBe_JSON/DFT_MD_1000K/WBeB2_MD1000K_102.json",
        ],
        "held_out": ["WBe_JSON/DFT_MD_1000K/WBeB2_MD1000K_100.json"],
    },
}


def make_config(system, zbl, **bispectrum):
    spec = SYSTEMS[system]
    raw = {"bispectrum": {**spec["bispectrum"], **bispectrum}, "md": {"enabled": False}}
    if zbl:
        raw["reference"] = {
            "pair_style": "hybrid/overlay zero 10.0 zbl 4.0 4.8",
            "pair_coeff": spec["zbl"],
        }
    return prepare_config(raw)


def read_configs(shared_data, files, elements):
    out = []
    for f in files:
        rec = parse_fitsnap_json(shared_data / f)
        types = np.array([elements.index(s) for s in rec["symbols"]])
        out.append((rec["positions"], rec["cell"], rec["pbc"], types))
    return out


def sheared(config, rng):
    """The same crystal in a random triclinic cell (tests LAMMPS's rotated frame)."""
    positions, cell, pbc, types = config
    frac = np.linalg.solve(cell.T, positions.T).T
    new_cell = cell + rng.normal(scale=0.3, size=(3, 3))
    return frac @ new_cell, new_cell, pbc, types


def random_model(cfg, option, shared_data, hidden=(8, 6), activation="tanh", seed=0, files=None):
    """A random-init model whose standardisation comes from real descriptors."""
    bis = cfg["bispectrum"]
    elements = list(bis["type"])
    K = num_descriptors(bis["twojmax"], bis["chemflag"], len(elements))
    torch.manual_seed(seed)
    model = AtomicEnergyModel(K, list(hidden), elements, option, activation)
    system = "Ta" if elements == ["Ta"] else "WBe"
    calc = SnapCalculator(cfg, with_gradients=False)
    try:
        Bs, Ts = [], []
        for positions, cell, pbc, types in read_configs(
            shared_data, files or SYSTEMS[system]["fit"], elements
        ):
            Bs.append(calc.compute(positions, cell, pbc, types)[0])
            Ts.append(types)
    finally:
        calc.close()
    model.set_standardisation(np.concatenate(Bs), np.concatenate(Ts))
    assert not torch.allclose(model.shift, torch.zeros_like(model.shift))
    return model


def assert_lammps_matches_torch(model, cfg, paths, configs):
    """Energies, per-atom energies and forces of LAMMPS (exported files) vs torch (float64)."""
    model64 = copy.deepcopy(model).double()
    n_types = len(cfg["bispectrum"]["type"])
    ref = cfg["reference"]
    ref_commands = [f"pair_style {ref['pair_style']}"] + [
        f"pair_coeff {c}" for c in ref["pair_coeff"]
    ]
    calc = SnapCalculator(cfg)
    try:
        for positions, cell, pbc, types in configs:
            want = torch_single_point(model64, cfg, positions, cell, pbc, types, calc)
            got = lammps_single_point(
                include_commands(paths), positions, cell, pbc, types, n_types
            )
            ref_atoms = lammps_single_point(ref_commands, positions, cell, pbc, types, n_types)
            assert abs(ref_atoms["energy"] - want["ref_energy"]) < TOL_E
            assert abs(got["energy"] - want["energy"]) < TOL_E, (got["energy"], want["energy"])
            np.testing.assert_allclose(
                got["energies"], want["ml_energies"] + ref_atoms["energies"], rtol=0, atol=TOL_E
            )
            np.testing.assert_allclose(got["forces"], want["forces"], rtol=0, atol=TOL_F)
            # the check can fail: the network's part is not negligible
            assert np.abs(want["forces"] - ref_atoms["forces"]).max() > 1e-3
    finally:
        calc.close()


@pytest.mark.parametrize("zbl", [False, True], ids=["no-ref", "zbl"])
@pytest.mark.parametrize("option", [1, 2, 3])
@pytest.mark.parametrize("system", ["Ta", "WBe"])
def test_lammps_reproduces_torch_model(system, option, zbl, shared_data, tmp_path):
    cfg = make_config(system, zbl)
    model = random_model(cfg, option, shared_data)
    record = export_model(model, cfg, tmp_path, "pot")
    assert record["self_check"]["force"] < TOL_F
    configs = read_configs(shared_data, SYSTEMS[system]["held_out"], cfg["bispectrum"]["type"])
    configs.append(sheared(configs[0], np.random.default_rng(option)))
    assert_lammps_matches_torch(model, cfg, export_paths(tmp_path, "pot"), configs)


@pytest.mark.parametrize(
    "activation,hidden", [("tanh", ()), ("relu", (6, 5)), ("sigmoid", (6,)), ("linear", (4,))]
)
def test_every_lammps_activation_exports_exactly(activation, hidden, shared_data, tmp_path):
    cfg = make_config("WBe", True)
    model = random_model(cfg, 2, shared_data, hidden=hidden, activation=activation)
    export_model(model, cfg, tmp_path, "pot")
    configs = read_configs(shared_data, SYSTEMS["WBe"]["held_out"], cfg["bispectrum"]["type"])
    assert_lammps_matches_torch(model, cfg, export_paths(tmp_path, "pot"), configs)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_network_started_from_a_linear_fit_exports_exactly(activation, shared_data, tmp_path):
    """linear_start's path (weights ~1e-3 in, ~1e3 out, beside ordinary neurons) reaches LAMMPS
    to round-off like any other network."""
    cfg = make_config("WBe", True)
    model = random_model(cfg, 2, shared_data, hidden=(6, 5), activation=activation)
    rng = np.random.default_rng(3)
    beta = rng.normal(0, 1, (2, model.num_desc)) / model.scale.double().numpy()
    with torch.no_grad():
        others = [net.layers[-1].weight[0, 1:].clone() for net in model.nets]
        model.start_from_linear(beta, [-1.0, -2.0], [-8.0, -6.0], [5.0, 4.0])
        for net, w in zip(model.nets, others, strict=True):  # the other neurons have learnt something
            net.layers[-1].weight[0, 1:] = w
    export_model(model, cfg, tmp_path, "pot")
    configs = read_configs(shared_data, SYSTEMS["WBe"]["held_out"], cfg["bispectrum"]["type"])
    assert_lammps_matches_torch(model, cfg, export_paths(tmp_path, "pot"), configs)


@pytest.mark.parametrize("twojmax,nelements", [(2, 2), (4, 2), (2, 3)])
def test_duplicate_sets_are_the_identical_columns(twojmax, nelements):
    """The combinatorial duplicate sets equal the columns LAMMPS computes as equal."""
    elements = ["W", "Be", "Ta"][:nelements]
    cfg = prepare_config(
        {
            "bispectrum": {
                "numTypes": nelements,
                "type": elements,
                "wj": [1.0, 0.9, 0.8][:nelements],
                "radelem": [0.5, 0.42, 0.45][:nelements],
                "twojmax": twojmax,
                "chemflag": 1,
                "bzeroflag": 0,
            },  # fmt: skip
            "md": {"enabled": False},
        }
    )
    rng = np.random.default_rng(3)
    positions = rng.random((40, 3)) * 9.0
    types = np.arange(40) % nelements
    calc = SnapCalculator(cfg, with_gradients=False)
    try:
        B = calc.compute(positions, np.eye(3) * 9.0, [True] * 3, types)[0]
    finally:
        calc.close()
    K = B.shape[1]
    scale = np.abs(B).max(axis=0)
    same = [
        (a, b) for a in range(K) for b in range(a + 1, K)
        if np.abs(B[:, a] - B[:, b]).max() <= 1e-12 * max(scale[a], 1.0)
    ]  # fmt: skip
    expected = {
        (a, b)
        for cols in duplicate_descriptor_sets(twojmax, nelements)
        for a in cols
        for b in cols
        if a < b
    }
    assert set(same) == expected
    assert expected  # chemflag 1 with several elements always has duplicates


@pytest.mark.parametrize("option", [1, 2, 3])
def test_chemflag_forces_exact_only_with_tied_duplicates(option, shared_data, tmp_path):
    cfg = make_config("WBe", True, chemflag=1, twojmax=2)
    model = random_model(cfg, option, shared_data)
    with (
        torch.no_grad()
    ):  # larger, untied duplicate weights, as an unconstrained fit may leave them
        for net in model.nets:
            net.layers[0].weight.mul_(3.0)
    record = export_model(model, cfg, tmp_path, "pot")
    assert record["chemflag_duplicate_sets"] > 0
    configs = read_configs(shared_data, SYSTEMS["WBe"]["held_out"], cfg["bispectrum"]["type"])
    assert_lammps_matches_torch(model, cfg, export_paths(tmp_path, "pot"), configs)

    # The same network written without tying: energies right, LAMMPS forces wrong.
    untied = lammps_network(model, duplicate_sets=())
    export_paths(tmp_path, "pot")["model"].write_text(format_model_file(untied))
    positions, cell, pbc, types = configs[0]
    want = torch_single_point(copy.deepcopy(model).double(), cfg, positions, cell, pbc, types)
    got = lammps_single_point(
        include_commands(export_paths(tmp_path, "pot")), positions, cell, pbc, types, 2
    )
    assert abs(got["energy"] - want["energy"]) < TOL_E
    assert np.abs(got["forces"] - want["forces"]).max() > 1e-4


@pytest.mark.parametrize("activation", ["silu", "softplus"])
def test_export_refuses_activation_lammps_would_run_as_linear(activation, shared_data, tmp_path):
    cfg = make_config("Ta", False)
    model = random_model(cfg, 1, shared_data, activation=activation)
    with pytest.raises(PotflowInputError, match=f"pytorch.activation.*'{activation}'"):
        export_model(model, cfg, tmp_path, "pot")
    assert list(tmp_path.iterdir()) == []
    assert (
        len(
            str(
                pytest.raises(PotflowInputError, check_lammps_activation, activation).value
            ).splitlines()
        )
        == 1
    )


def test_model_file_respects_lammps_reader(shared_data, tmp_path):
    cfg = make_config("WBe", False)
    model = random_model(cfg, 3, shared_data, hidden=(37, 5))  # 37 > 30 inputs a node
    export_model(model, cfg, tmp_path, "pot", check=False)
    path = export_paths(tmp_path, "pot")["model"]
    raw = path.read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    lines = [ln.split("#")[0].split() for ln in raw.decode().splitlines()]
    lines = [w for w in lines if w]
    n_el, nparams = map(int, lines[0])
    K = model.num_desc
    assert lines[1] == ["NET", str(K), "3", "tanh", "37", "tanh", "5", "linear", "1"]
    assert nparams == 37 * (K + 1) + 5 * 38 + 6
    numeric = lines[2:]
    assert max(len(w) for w in numeric) <= 30
    # blocks start on their own lines: walk the blocks by line
    pos = 0
    for _ in range(n_el):
        for size in (K, K, nparams):
            count = 0
            while count < size:
                count += len(numeric[pos])
                pos += 1
            assert count == size
    assert pos == len(numeric)
    net = read_model_file(path, ["W", "Be"])
    want = lammps_network(model)
    for a, b in zip(
        [net.shift, net.scale, *net.weights, *net.biases],
        [want.shift, want.scale, *want.weights, *want.biases],
        strict=True,
    ):
        assert np.array_equal(a, b)


def _corrupt(text, how):
    lines = text.split("\n")
    first_numeric = next(
        i
        for i, ln in enumerate(lines)
        if ln and not ln.startswith("#") and ln.split()[0] not in ("NET",) and i > 3
    )
    if how == "crlf":
        return text.replace("\n", "\r\n")
    if how == "nparams":
        head = next(i for i, ln in enumerate(lines) if ln and not ln.startswith("#"))
        n_el, nparams = lines[head].split()
        lines[head] = f"{n_el} {int(nparams) + 1}"
    elif how == "truncated":
        lines = lines[:-3]
    elif how == "crossing":  # merge the last shift line into the first scale line
        lines[first_numeric] = lines[first_numeric] + " " + lines[first_numeric + 1]
        del lines[first_numeric + 1]
    elif how == "activation":
        lines = [ln.replace("tanh", "gelu") if ln.startswith("NET") else ln for ln in lines]
    elif how == "too_many":
        lines[-2] = lines[-2] + " 0.0"
    return "\n".join(lines)


@pytest.mark.parametrize(
    "how", ["crlf", "nparams", "truncated", "crossing", "activation", "too_many"]
)
def test_reader_refuses_malformed_model_files(how, shared_data, tmp_path):
    cfg = make_config("Ta", False)
    model = random_model(cfg, 1, shared_data, hidden=(4,))
    net = lammps_network(model)
    path = tmp_path / "bad.mliap.model"
    path.write_bytes(_corrupt(format_model_file(net), how).encode())
    with pytest.raises(PotflowInputError):
        read_model_file(path)


def test_descriptor_file_mirrors_every_bispectrum_flag(tmp_path):
    cfg = make_config(
        "WBe",
        False,
        rfac0=0.95,
        rmin0=0.1,
        switchflag=0,
        bzeroflag=0,
        chemflag=1,
        bnormflag=1,
        wselfallflag=1,
    )
    text = format_descriptor_file(cfg)
    keys = {}
    for line in text.splitlines():
        words = line.split("#")[0].split()
        if words:
            keys[words[0]] = words[1:]
    bis = cfg["bispectrum"]
    for key in ("rcutfac", "rfac0", "rmin0"):
        assert float(keys[key][0]) == bis[key]
    for key in ("twojmax", "switchflag", "bzeroflag", "chemflag", "bnormflag", "wselfallflag"):
        assert int(keys[key][0]) == bis[key]
    assert keys["nelems"] == ["2"] and keys["elems"] == ["W", "Be"]
    assert [float(x) for x in keys["radelems"]] == bis["radelem"]
    assert [float(x) for x in keys["welems"]] == bis["wj"]
    assert set(keys) == {"rcutfac", "twojmax", "rfac0", "rmin0", "switchflag", "bzeroflag", "chemflag",
                         "bnormflag", "wselfallflag", "nelems", "elems", "radelems", "welems"}  # fmt: skip


def test_pair_commands_overlay_reference_without_zero():
    cfg = make_config("WBe", True)
    lines = pair_commands(cfg, "m", "d")
    assert lines == [
        "pair_style hybrid/overlay zbl 4.0 4.8 mliap model nn m descriptor sna d",
        "pair_coeff 1 1 zbl 74 74", "pair_coeff 1 2 zbl 74 4", "pair_coeff 2 2 zbl 4 4",
        "pair_coeff * * mliap W Be",
    ]  # fmt: skip
    assert pair_commands(make_config("Ta", False), "m", "d") == [
        "pair_style mliap model nn m descriptor sna d", "pair_coeff * * Ta"
    ]  # fmt: skip
    plain = make_config("Ta", False)
    plain["reference"] = {
        "units": "metal",
        "atom_style": "atomic",
        "pair_style": "zbl 4.0 4.8",
        "pair_coeff": ["* * 73 73"],
    }
    assert pair_commands(plain, "m", "d")[1:] == [
        "pair_coeff * * zbl 73 73",
        "pair_coeff * * mliap Ta",
    ]
    plain["reference"]["pair_style"] = "hybrid/scaled 1.0 zero 10.0 1.0 zbl 4.0 4.8"
    with pytest.raises(PotflowInputError, match="hybrid/scaled"):
        pair_commands(plain, "m", "d")


def test_include_file_runs_from_any_directory(shared_data, tmp_path, monkeypatch):
    cfg = make_config("Ta", True)
    model = random_model(cfg, 1, shared_data, hidden=(4,))
    export_model(model, cfg, tmp_path / "lammps", "pot")
    text = (tmp_path / "lammps" / "pot.mod").read_text()
    assert "zero" not in text.split("variable")[1]
    assert "mass 1 180.9" in text
    # default ${potflow_dir} is '.', i.e. LAMMPS started in the export folder
    monkeypatch.chdir(tmp_path / "lammps")
    positions, cell, pbc, types = read_configs(shared_data, SYSTEMS["Ta"]["held_out"][:1], ["Ta"])[
        0
    ]
    got = lammps_single_point(["include pot.mod"], positions, cell, pbc, types, 1)
    want = torch_single_point(model.double(), cfg, positions, cell, pbc, types)
    assert abs(got["energy"] - want["energy"]) < TOL_E


def test_torchscript_matches_model_and_needs_no_potflow(shared_data, tmp_path):
    cfg = make_config("WBe", False)
    model = random_model(cfg, 3, shared_data)
    export_model(model, cfg, tmp_path, "pot", check=False)
    path = export_paths(tmp_path, "pot")["torchscript"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch marks TorchScript deprecated
        scripted = torch.jit.load(str(path))
    calc = SnapCalculator(cfg, with_gradients=False)
    try:
        positions, cell, pbc, types = read_configs(
            shared_data, SYSTEMS["WBe"]["held_out"], ["W", "Be"]
        )[0]
        B = torch.as_tensor(calc.compute(positions, cell, pbc, types)[0])
    finally:
        calc.close()
    t = torch.as_tensor(types)
    want = copy.deepcopy(model).double()(B, t)
    got = scripted(B, t)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    code = (
        "import sys, torch\n"
        f"m = torch.jit.load({str(path)!r})\n"
        "assert not any(k.startswith('potflow') for k in sys.modules), 'potflow imported'\n"
        "print(m.elements)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "['W', 'Be']" in res.stdout


def test_torchscript_runs_under_lammps_mliappy_wrapper(shared_data, tmp_path):
    """LAMMPS's Python coupling (mliappy) calls TorchWrapper: energies and dE/dB match the model."""
    from lammps.mliap.pytorch import TorchWrapper

    cfg = make_config("WBe", False, chemflag=1, twojmax=2)
    model = random_model(cfg, 2, shared_data)
    export_model(model, cfg, tmp_path, "pot", check=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(export_paths(tmp_path, "pot")["torchscript"]))
    wrapper = TorchWrapper(scripted, n_descriptors=model.num_desc, n_elements=2, n_params=1)
    calc = SnapCalculator(cfg, with_gradients=False)
    try:
        positions, cell, pbc, types = read_configs(
            shared_data, SYSTEMS["WBe"]["held_out"], ["W", "Be"]
        )[0]
        B = calc.compute(positions, cell, pbc, types)[0]
    finally:
        calc.close()
    beta, energy = np.zeros_like(B), np.zeros(len(B))
    wrapper(types + 1, B, beta, energy)  # LAMMPS passes 1-based element types
    e_want, g_want = (
        copy.deepcopy(model)
        .double()
        .energy_and_gradient(torch.as_tensor(B), torch.as_tensor(types))
    )
    np.testing.assert_allclose(energy, e_want.detach().numpy(), rtol=0, atol=1e-12)
    # duplicate columns carry the mean of their torch gradients (the sum is what forces use)
    g_want = g_want.detach().numpy()
    for cols in duplicate_descriptor_sets(2, 2):
        g_want[:, cols] = g_want[:, cols].mean(axis=1, keepdims=True)
    np.testing.assert_allclose(beta, g_want, rtol=0, atol=1e-10)


def test_export_records_the_exported_model_file(shared_data, tmp_path):
    cfg = make_config("Ta", True)
    model = random_model(cfg, 2, shared_data, hidden=(4,))
    model_file = tmp_path / "model.pt"
    save_model(model_file, model, epoch=7, selection="best", val_loss=0.25)
    record = export_model_file(model_file, cfg, tmp_path / "lammps", "Ta_pot")
    saved = __import__("json").loads((tmp_path / "lammps" / "Ta_pot.export.json").read_text())
    assert saved == record
    assert saved["exported_model"] == str(model_file)
    assert saved["exported_model_sha256"] == sha256(model_file)
    assert saved["model_info"] == {"epoch": 7, "selection": "best", "val_loss": 0.25}
    assert set(saved["files"].values()) == {p.name for p in (tmp_path / "lammps").iterdir()}
    loaded, _ = load_model(model_file)
    assert torch.equal(loaded.shift, model.shift)


def test_export_that_lammps_does_not_reproduce_is_refused_whole(shared_data, tmp_path, monkeypatch):
    """The self-check catches a mismatch (here a wrong descriptor flag); nothing is left behind."""
    cfg = make_config("Ta", False)
    model = random_model(cfg, 1, shared_data, hidden=(4,))
    good = format_descriptor_file
    monkeypatch.setattr(
        potflow.lammps.export, "format_descriptor_file", lambda c: good(c).replace("bzeroflag 1", "bzeroflag 0")
    )
    with pytest.raises(PotflowInputError, match="LAMMPS does not reproduce the torch model"):
        export_model(model, cfg, tmp_path, "pot")
    assert list(tmp_path.iterdir()) == []
