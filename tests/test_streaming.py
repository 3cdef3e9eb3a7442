"""Bounded memory on a W–Be subset: gradient rows written as they come, float32 gradients,
and training streamed from the memory-mapped files in a tiny memory budget."""

import gc
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from synthetic import assert_streamed_fit_equals_in_memory

from potflow.config.load import prepare_config
from potflow.data.structures import import_group, iter_configs, load_group
from potflow.descriptors.compute import SnapCalculator, compute_group_descriptors
from potflow.descriptors.folders import NpyAppender, open_group
from potflow.training.datasets import ConfigSet, FitData
from potflow.training.loop import TrainPaths, train
from potflow.training.stores import PreparedSet, make_store

ROOT = Path(__file__).resolve().parent.parent
# (group, number of files): W–Be MD cells (54 atoms), Be on a W surface (97), W–Be EOS (2)
SUBSET = {"DFT_MD_1000K": 24, "WSurface_BeAdhesion": 4, "EOS": 16}


def wbe_config(data_dir, gradient_dtype="float64", **pytorch):
    """configs/WBe.yaml on a subset: a small network in float64, no MD."""
    cfg = yaml.safe_load((ROOT / "configs" / "WBe.yaml").read_text())
    cfg["path"]["dataPath"] = str(data_dir)
    cfg["descriptors"]["gradient_dtype"] = gradient_dtype
    cfg["pytorch"].update(
        layer_sizes=["num_desc", 8, 8, 1], num_epochs=2, batch_size=2, dtype="float64", **pytorch
    )
    cfg["md"] = {"enabled": False}
    return prepare_config(cfg)


def link_files(shared_data, dest, group, count, start=0):
    (dest / group).mkdir(parents=True)
    files = sorted((shared_data / "WBe_JSON" / group).glob("*.json"))[start : start + count]
    for f in files:
        (dest / group / f.name).symlink_to(f)
    return dest / group


def descriptor_folders(root, cfg, groups):
    out = []
    for group in groups:
        npz = root / "data" / f"{group}.npz"
        if not npz.exists():
            import_group(Path(cfg["path"]["dataPath"]) / group, "JSON", ["W", "Be"], npz)
        folder = root / cfg["descriptors"]["gradient_dtype"] / group
        compute_group_descriptors(cfg, npz, folder, group)
        out.append(str(folder))
    return out


@pytest.fixture(scope="module")
def wbe(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("wbe")
    for group, count in SUBSET.items():
        link_files(shared_data, root / "WBe_JSON", group, count)
    cfg64 = wbe_config(root / "WBe_JSON")
    cfg32 = wbe_config(root / "WBe_JSON", "float32")
    return {
        "root": root,
        "cfg64": cfg64,
        "cfg32": cfg32,
        "f64": descriptor_folders(root, cfg64, SUBSET),
        "f32": descriptor_folders(root, cfg32, SUBSET),
    }


def paths(folder):
    folder = Path(folder)
    return TrainPaths(folder / "model.pt", folder / "ckpt.pt", folder / "loss.dat", folder / "split.tsv", folder / "resume.pt")


# ----------------------------------------------------------------------------- descriptor files


def test_appended_npy_files_load_like_saved_ones(tmp_path):
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(n, 5)) for n in (0, 3, 1, 0, 7)]
    app = NpyAppender(tmp_path / "a.npy", 5, np.float32)
    for b in blocks:
        app.append(b)
    app.close()
    want = np.concatenate(blocks).astype(np.float32)
    for mode in (None, "r"):
        got = np.load(tmp_path / "a.npy", mmap_mode=mode)
        assert got.dtype == np.float32 and got.shape == (11, 5)
        np.testing.assert_array_equal(got, want)
    empty = NpyAppender(tmp_path / "e.npy", 3, np.int32)
    empty.close()
    assert np.load(tmp_path / "e.npy").shape == (0, 3)
    with pytest.raises(ValueError, match="want"):
        NpyAppender(tmp_path / "b.npy", 5, np.float64).append(np.zeros((2, 4)))


def test_gradient_files_hold_every_row_in_order(wbe):
    calc = SnapCalculator(wbe["cfg64"])
    try:
        for f64, f32 in zip(wbe["f64"], wbe["f32"], strict=True):
            a, meta = open_group(f64, wbe["cfg64"])
            b, meta32 = open_group(f32, wbe["cfg32"])
            R = meta["num_grad_rows"]
            assert a["grad_values"].shape == (R, 30) and a["grad_index"].shape == (R, 3)
            assert a["grad_ptr"][-1] == R and a["grad_values"].dtype == np.float64
            # float32 files: the same rows rounded, half the bytes
            assert b["grad_values"].dtype == np.float32
            np.testing.assert_array_equal(b["grad_values"], a["grad_values"].astype(np.float32))
            np.testing.assert_array_equal(b["grad_index"], a["grad_index"])
            assert Path(f32, "grad_values.npy").stat().st_size < 0.51 * Path(f64, "grad_values.npy").stat().st_size
            # the last configuration's rows, recomputed on their own, sit at its grad_ptr range
            data = load_group(Path(wbe["root"]) / "data" / f"{meta['group']}.npz")
            conf = list(iter_configs(data))[-1]
            n = len(conf["symbols"])
            types = np.asarray(a["atom_types"][-n:])
            _, _, _, idx, val = calc.compute(conf["positions"], conf["cell"], conf["pbc"], types)
            lo = a["grad_ptr"][-2]
            np.testing.assert_array_equal(a["grad_index"][lo:], idx)
            np.testing.assert_array_equal(a["grad_values"][lo:], val)
    finally:
        calc.close()


def test_descriptor_job_memory_follows_the_largest_configuration(wbe, shared_data, tmp_path):
    """Peak traced memory (numpy's allocations) of a group job hardly grows with the group."""
    cfg = wbe["cfg64"]
    peaks, rows = [], []
    for count in (3, 30):
        src = link_files(shared_data, tmp_path / f"n{count}", "DFT_MD_300K", count)
        npz = tmp_path / f"n{count}.npz"
        import_group(src, "JSON", ["W", "Be"], npz)
        tracemalloc.start()
        meta = compute_group_descriptors(cfg, npz, tmp_path / f"d{count}", "DFT_MD_300K")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        rows.append(meta["num_grad_rows"])
    grad_bytes = rows[1] * 30 * 8
    assert rows[1] > 8 * rows[0]
    # 10x the gradient rows: the peak stays that of one configuration (holding the group's
    # rows in memory, as before, made it twice the group's rows)
    assert peaks[1] < 1.25 * peaks[0], (peaks, rows)
    assert peaks[1] < 0.35 * grad_bytes, (peaks, grad_bytes)


# ----------------------------------------------------------------------------- training


def test_float32_gradient_files_train_like_float64(wbe, tmp_path):
    a = train(wbe["cfg64"], wbe["f64"], paths(tmp_path / "g64"), progress=False)
    b = train(wbe["cfg32"], wbe["f32"], paths(tmp_path / "g32"), progress=False)
    # float32 rounding of the rows (relative 6e-8) changes the losses in the 7th digit or so
    np.testing.assert_allclose(np.array(b["history"]), np.array(a["history"]), rtol=1e-5)
    assert not np.allclose(np.array(b["history"]), np.array(a["history"]), rtol=1e-13, atol=0)


def test_streamed_fit_equals_in_memory_fit(wbe, tmp_path):
    assert_streamed_fit_equals_in_memory(wbe["cfg64"], wbe["f64"], tmp_path)


def mapped_rss(name):
    """Resident bytes of this process's mappings of files called ``name`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
            inside = line.endswith(name)
        elif inside and line.startswith("Rss:"):
            total += int(head[1]) * 1024
    return total


def prepared_bytes(prepared):
    # the chunk read ahead may still be under construction in its thread: count what it has
    arrays = [getattr(prepared, name, None) for name in ("x", "grad", "force")]
    host = [getattr(prepared, name, None) for name in ("types", "row_i", "row_j", "row_a")]
    return sum(t.element_size() * t.numel() for t in arrays if t is not None) + sum(
        a.nbytes for a in host if a is not None
    )


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs /proc/self/smaps")
def test_streamed_epoch_keeps_resident_data_within_the_budget(wbe):
    cfg = wbe["cfg32"]
    data = FitData(cfg, wbe["f32"])
    train_ids = data.ids("train")
    cs = ConfigSet(data, train_ids[data.table["natoms"][train_ids] <= 54])  # W–Be MD and EOS cells
    K = data.num_desc
    shift, scale = np.zeros((2, K)), np.ones((2, K))
    total = cs.prepared_bytes(torch.float32)
    budget = 1 << 19  # 0.5 MB, a small fraction of the set
    store = make_store(cs, shift, scale, 2, torch.float32, "cpu", budget_bytes=budget)
    assert store.streaming and total > 8 * budget
    order = np.random.default_rng(1).permutation(len(cs))
    bound = 2 * max(store.chunk_bytes, int(store.config_bytes.max()))  # the chunk in training + the one read ahead
    resident, mapped, n_chunks, seen = [], [], 0, []
    for _, batches in store.epoch(order, 1):
        n_chunks += 1
        alive = [o for o in gc.get_objects() if type(o) is PreparedSet]
        resident.append(sum(prepared_bytes(p) for p in alive))
        del alive  # or the next scan finds these through this list
        mapped.append(mapped_rss("grad_values.npy"))
        seen += [b.energy for b in batches]
    assert n_chunks > 8 and len(torch.cat(seen)) == len(cs)
    assert max(resident) <= bound < total / 4, (max(resident), bound, total)
    # mapped file pages are dropped after each chunk: never more than one chunk's rows mapped
    rows_bytes = int(cs.nrows.max()) * K * 4
    assert max(mapped) <= 2 * max(store.chunk_bytes, rows_bytes) + (1 << 20), (max(mapped), store.chunk_bytes)
    gc.collect()
    assert mapped_rss("grad_values.npy") <= 64 << 10
