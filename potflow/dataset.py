"""Training data of a fit: descriptor folders, the train/val/test split, and batches.

Split, per group, with FitSNAP's [GROUPS] semantics: the group's configurations (shuffled with
``groups.random_seed`` when ``random_sampling`` is 1) give the first n_train to training and the
next n_test to testing. A size <= 1 is a fraction, count = max(1, round(f * n)) (0 stays 0);
a size > 1 is a count. Validation configurations, which pick the best epoch and are never
reported as test, are drawn (seeded) from each group's training configurations:
round(validation_fraction * n_train), always leaving one to train on.

Targets: energy E_m + sum_i eshift[element_i] - E_ref (FitSNAP adds [ESHIFT] to the DFT energy) and force F - F_ref; weights w^E_m, w^F_m
from the group (or the global [PYTORCH] weights).

A ``PreparedSet`` holds configurations ready for the network: standardised descriptors
x = (B - shift) / scale (one-hot columns appended for option 3) and descriptor gradients
pre-multiplied by -1/scale, so that F_j^a = sum_rows dE/dx_i . g_row. Its ``batches`` makes the
index tensors of a whole epoch in one vectorised pass (no Python loop over atoms or configs).

Stores (``make_store``): ``MemoryStore`` prepares a whole set once (on the training device);
``StreamStore`` reads consecutive batches from the memory-mapped folders in chunks of bounded
size while the previous chunk trains, and drops the mapped pages it has read, so that resident
memory follows ``pytorch.memory_budget_mb`` rather than the data set.
"""

import math
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from potflow.config import elements as config_elements
from potflow.config import group_options
from potflow.descriptors import open_group
from potflow.errors import PotflowInputError

SETS = ("train", "val", "test")


def concat_ranges(starts, lengths):
    """Concatenation of arange(s, s + n) over (s, n) pairs, vectorised."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    return np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)


def batch_sizes(n, batch_size):
    """Configurations in each batch of a pass over n: every ``batch_size`` (the last one
    smaller), or the sizes given (a sequence of positive counts adding up to n)."""
    if np.ndim(batch_size) == 0:
        return np.diff(np.append(np.arange(0, n, int(batch_size)), n)).astype(np.int64)
    sizes = np.asarray(batch_size, dtype=np.int64)
    if sizes.sum() != n or (sizes <= 0).any():
        raise ValueError(f"batch sizes {sizes.tolist()} do not split {n} configurations")
    return sizes


# ----------------------------------------------------------------------------- split


def size_count(size, n, where, field):
    """FitSNAP's size rule: a fraction (<= 1) or a count (> 1) of n configurations."""
    if size == 0:
        return 0
    if size <= 1:
        return max(1, math.floor(size * n + 0.5))
    if size != int(size):
        raise PotflowInputError(where, f"{field} {size} is a count (> 1) but not a whole number")
    return int(size)


def _group_rng(seed, group, stream):
    # Seeded by the group's name, so adding or removing a group leaves the others' splits alone.
    return np.random.default_rng([int(seed), zlib.crc32(group.encode()), stream])


def split_group(n, group, opts, validation_fraction, random_sampling, random_seed):
    """(labels, note): the set ("train", "val", "test", "" unused) of each of a group's n
    configurations, and a note when the test set had to shrink (else None)."""
    where = f"config groups.{group}"
    tr_size, te_size = opts["training_size"], opts["testing_size"]
    n_train = size_count(tr_size, n, where, "training_size")
    n_test = size_count(te_size, n, where, "testing_size")
    if n_train > n:
        raise PotflowInputError(where, f"training_size {tr_size} asks for {n_train} configurations but the group has {n}")
    note = None
    if n_train + n_test > n:
        # FitSNAP does the same (with a warning): the test set takes what is left
        note = f"group {group}: {n_train} train + {n_test} test > {n} configurations; testing on {n - n_train}"
        n_test = n - n_train
    if n_train == 0:
        raise PotflowInputError(
            where,
            f"the split leaves no configurations to train on (training_size {tr_size}, {n} configs); "
            "score test-only data with test_sets: or leave the group out with groups.exclude",
        )
    order = _group_rng(random_seed, group, 0).permutation(n) if random_sampling else np.arange(n)
    labels = np.full(n, "", dtype=object)
    train = order[:n_train]
    labels[train] = "train"
    labels[order[n_train : n_train + n_test]] = "test"
    n_val = min(math.floor(validation_fraction * n_train + 0.5), n_train - 1)
    if n_val > 0:
        labels[_group_rng(random_seed, group, 1).choice(train, n_val, replace=False)] = "val"
    return labels, note


# ----------------------------------------------------------------------------- fit data


class GroupData:
    """One group's memory-mapped descriptor folder and its small per-config arrays."""

    def __init__(self, folder, cfg):
        self.folder = Path(folder)
        self.arrays, self.meta = open_group(folder, cfg)
        self.name = self.meta.get("group") or self.folder.name
        a = self.arrays
        self.natoms = np.asarray(a["natoms"], dtype=np.int64)
        self.atom_start = np.concatenate([[0], np.cumsum(self.natoms)[:-1]]).astype(np.int64)
        ptr = np.asarray(a["grad_ptr"], dtype=np.int64)
        self.row_start, self.nrows = ptr[:-1], np.diff(ptr)
        self.types = np.asarray(a["atom_types"], dtype=np.int64)
        self.has_forces = bool(self.meta["settings"].get("forces", True))
        if len(self.natoms) == 0:
            raise PotflowInputError(self.folder, "descriptor folder holds no configurations")

    def release_pages(self):
        """Drop the mapped pages read so far from this process (the page cache keeps them)."""
        import mmap

        for arr in self.arrays.values():
            mm = getattr(arr, "_mmap", None)
            if mm is not None and hasattr(mm, "madvise"):
                mm.madvise(mmap.MADV_DONTNEED)


class FitData:
    """The training groups of a fit, split into train/val/test, with targets and weights."""

    def __init__(self, cfg, folders):
        if not folders:
            raise PotflowInputError("config", "the fit has no training groups")
        self.cfg = cfg
        self.elements = config_elements(cfg)
        self.groups = [GroupData(f, cfg) for f in folders]
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise PotflowInputError("config", f"a group is listed twice: {names}")
        self.num_desc = int(self.groups[0].meta["num_descriptors"])
        self.has_forces = all(g.has_forces for g in self.groups)
        tcfg, gcfg = cfg["pytorch"], cfg["groups"]
        eshift = np.array([float(cfg["eshift"].get(el, 0.0)) for el in self.elements])
        self.notes = []
        cols = {k: [] for k in ("group_id", "index", "natoms", "set", "file", "energy", "ew", "fw")}
        for gid, g in enumerate(self.groups):
            opts = group_options(cfg, g.name)
            n = len(g.natoms)
            labels, note = split_group(
                n, g.name, opts, tcfg["validation_fraction"], gcfg["random_sampling"], gcfg["random_seed"]
            )
            if note:
                self.notes.append(note)
            config_of_atom = np.repeat(np.arange(n), g.natoms)
            shift = np.bincount(config_of_atom, weights=eshift[g.types], minlength=n)
            cols["group_id"].append(np.full(n, gid))
            cols["index"].append(np.arange(n))
            cols["natoms"].append(g.natoms)
            cols["set"].append(labels)
            cols["file"].append(np.asarray(g.arrays["files"]).astype(str))
            cols["energy"].append(np.asarray(g.arrays["energy_target"], dtype=np.float64) + shift)
            cols["ew"].append(np.full(n, float(opts["eweight"])))
            cols["fw"].append(np.full(n, float(opts["fweight"]) if g.has_forces else 0.0))
        self.table = {k: np.concatenate(v) for k, v in cols.items()}
        self.table["set"] = self.table["set"].astype(str)

    def ids(self, name):
        return np.flatnonzero(self.table["set"] == name)

    def subset(self, name):
        return ConfigSet(self, self.ids(name))

    def split_rows(self):
        """Rows of split.tsv: (group, index, file, natoms, set) of every used configuration."""
        t = self.table
        used = np.flatnonzero(t["set"] != "")
        return [
            (self.groups[t["group_id"][m]].name, int(t["index"][m]), t["file"][m], int(t["natoms"][m]), t["set"][m])
            for m in used
        ]

    def write_split(self, path):
        from potflow.fileio import write_text

        lines = ["group\tindex\tfile\tnatoms\tset"]
        lines += ["\t".join(str(v) for v in row) for row in self.split_rows()]
        write_text(path, "\n".join(lines) + "\n")

    def release_pages(self):
        for g in self.groups:
            g.release_pages()


class ConfigSet:
    """Some configurations of a FitData (global ids into its table)."""

    def __init__(self, data, ids):
        self.data = data
        self.ids = np.asarray(ids, dtype=np.int64)
        t = data.table
        self.gid = t["group_id"][self.ids]
        self.local = t["index"][self.ids]
        self.natoms = t["natoms"][self.ids]
        self.nrows = np.zeros(len(self.ids), np.int64)
        for gid, g in enumerate(data.groups):
            sel = self.gid == gid
            self.nrows[sel] = g.nrows[self.local[sel]]

    def __len__(self):
        return len(self.ids)

    @property
    def n_atoms(self):
        return int(self.natoms.sum())

    @property
    def n_rows(self):
        return int(self.nrows.sum())

    def pieces(self, max_rows=250_000):
        """(group, local config ids, positions in this set), one group at a time in file order.

        A piece reads at most about ``max_rows`` gradient rows and atoms, so reading the set
        never needs more than one piece's float64 transients.
        """
        by_group = np.lexsort((self.local, self.gid))
        cut = np.flatnonzero(np.diff(self.gid[by_group])) + 1
        for run in np.split(by_group, cut) if len(by_group) else []:
            rows = np.cumsum(self.nrows[run] + self.natoms[run])
            parts = np.searchsorted(rows, np.arange(max_rows, rows[-1], max_rows), side="right")
            for part in np.split(run, parts):
                if len(part):
                    yield self.data.groups[self.gid[part[0]]], self.local[part], part

    def moments(self):
        """Per-element (count, mean, M2) of the descriptors of this set's atoms (float64)."""
        n_el, K = len(self.data.elements), self.data.num_desc
        count, mean, m2 = np.zeros(n_el), np.zeros((n_el, K)), np.zeros((n_el, K))
        for g, local, _ in self.pieces():
            atoms = concat_ranges(g.atom_start[local], g.natoms[local])
            B = np.asarray(g.arrays["descriptors"][atoms], dtype=np.float64)
            t = g.types[atoms]
            for e in range(n_el):
                x = B[t == e]
                if len(x) == 0:
                    continue
                nb, mb = len(x), x.mean(0)
                m2b = ((x - mb) ** 2).sum(0)
                n = count[e] + nb
                delta = mb - mean[e]
                mean[e] += delta * nb / n
                m2[e] += m2b + delta**2 * count[e] * nb / n
                count[e] = n
        self.data.release_pages()
        return count, mean, m2

    def element_counts(self):
        """(M, n_el) number of atoms of each element in each configuration."""
        n_el = len(self.data.elements)
        out = np.zeros((len(self.ids), n_el), np.int64)
        for g, local, pos in self.pieces():
            atoms = concat_ranges(g.atom_start[local], g.natoms[local])
            config = np.repeat(np.arange(len(local)), g.natoms[local])
            out[pos] = np.bincount(config * n_el + g.types[atoms], minlength=len(local) * n_el).reshape(-1, n_el)
        return out

    def energy_offsets(self):
        """(mu, spread): per-element energy per atom that best fits this set's energy targets
        (least squares on energies per atom, as in the loss; an element absent from the set
        gets the mean) and the root mean square of the remaining energies per atom."""
        counts = self.element_counts().astype(float)
        energy = self.data.table["energy"][self.ids]
        present = counts.sum(0) > 0
        n = self.natoms[:, None].astype(float)
        mu = np.zeros(counts.shape[1])
        sol = np.linalg.lstsq(counts[:, present] / n, energy / self.natoms, rcond=None)[0]
        mu[present] = sol
        mu[~present] = sol.mean() if len(sol) else 0.0
        residual = (energy - counts @ mu) / self.natoms
        spread = float(np.sqrt(np.mean(residual**2))) if len(residual) else 1.0
        return mu, spread

    def config_bytes(self, dtype):
        """Memory each configuration takes in a PreparedSet (with the per-epoch copies), in bytes."""
        s = torch.empty((), dtype=dtype).element_size()
        kx = self.data.num_desc + len(self.data.elements)
        return self.natoms * (2 * kx * s + 6 * s + 48) + self.nrows * (self.data.num_desc * s + 9 + 24)

    def prepared_bytes(self, dtype):
        return int(self.config_bytes(dtype).sum())

    def prepare(self, shift, scale, option, dtype, device, order=None, pin=False, raw_gradients=False):
        """PreparedSet of these configurations, or of those at positions ``order`` in this set."""
        sub = self if order is None else ConfigSet(self.data, self.ids[np.asarray(order)])
        return PreparedSet(sub, shift, scale, option, dtype, device, pin, raw_gradients)


# ----------------------------------------------------------------------------- prepared data


def read_config_rows(src, starts, counts, out):
    """``out`` = rows starts[k]:starts[k]+counts[k] of ``src``, one run after another.

    A whole memory-mapped ``.npy`` is read with positional reads straight into ``out`` (no
    page faults, nothing left mapped; runs that follow each other in the file are read at
    once); anything else by fancy indexing.
    """
    starts, counts = np.asarray(starts, np.int64), np.asarray(counts, np.int64)
    filename = getattr(src, "filename", None)
    row = src.dtype.itemsize * math.prod(src.shape[1:])
    whole = filename is not None and src.flags.c_contiguous and os.path.getsize(filename) - src.offset == src.nbytes
    if not (whole and out.dtype == src.dtype and out.flags.c_contiguous):
        out[...] = src[concat_ranges(starts, counts)]
        return out
    keep = counts > 0
    starts, counts = starts[keep], counts[keep]
    if len(starts) == 0:
        return out
    new_run = np.ones(len(starts), bool)
    new_run[1:] = starts[1:] != starts[:-1] + counts[:-1]
    run_bytes = np.add.reduceat(counts, np.flatnonzero(new_run)) * row
    view = memoryview(out.reshape(-1).view(np.uint8))
    fd = os.open(filename, os.O_RDONLY)
    try:
        pos = 0
        for at, size in zip((src.offset + starts[new_run] * row).tolist(), run_bytes.tolist(), strict=True):
            if os.preadv(fd, [view[pos : pos + size]], at) != size:
                raise PotflowInputError(filename, "descriptor file is shorter than its header says")
            pos += size
    finally:
        os.close(fd)
    return out


class Batch:
    """Tensors of one batch (index tensors count atoms within the batch).

    ``grad_scale`` is None when the set's gradient rows are pre-multiplied by -1/scale;
    otherwise (streamed raw rows) it holds -1/scale of each atom's element, (A_b, K).
    """

    __slots__ = (
        "x", "counts", "atom_config", "n_configs", "energy", "w_energy", "force", "w_force",
        "row_ids", "row_i", "row_ja", "grad_scale",
    )  # fmt: skip

    def __init__(self, **kw):
        self.grad_scale = None
        for k, v in kw.items():
            setattr(self, k, v)


class PreparedSet:
    """Standardised inputs and scaled gradients of some configurations, on the training device.

    Host arrays (numpy) describe the layout; ``x`` (A, Kx), ``grad`` (R, K) and ``force``
    (A, 3) are tensors on ``device``. Gradient rows keep the within-set atom numbers of
    their atom i and of the displaced atom j (and the direction a). With ``pin`` and a CUDA
    device the host copies are page-locked and sent without waiting (streamed chunks).
    """

    def __init__(self, cs, shift, scale, option, dtype, device, pin=False, raw_gradients=False):
        data = cs.data
        self.option, self.n_el = option, len(data.elements)
        self.device, self.dtype = torch.device(device), dtype
        self.K = K = data.num_desc
        kx = K + (self.n_el if option == 3 else 0)
        self.n_configs = M = len(cs)
        self.natoms, self.nrows = cs.natoms.astype(np.int64), cs.nrows.astype(np.int64)
        self.atom_start = np.concatenate([[0], np.cumsum(self.natoms)[:-1]]).astype(np.int64)
        self.row_start = np.concatenate([[0], np.cumsum(self.nrows)[:-1]]).astype(np.int64)
        A, R = int(self.natoms.sum()), int(self.nrows.sum())
        t = data.table
        self.energy = t["energy"][cs.ids]
        self.w_energy = t["ew"][cs.ids] / self.natoms.astype(float) ** 2
        self.w_force = t["fw"][cs.ids] / (3.0 * self.natoms)
        self.has_forces = R > 0 and bool(np.any(self.w_force > 0))
        shift = np.asarray(shift, dtype=np.float64)
        scale = np.asarray(scale, dtype=np.float64)
        pin = pin and self.device.type == "cuda"
        # raw rows: dB/dR as stored; each batch carries -1/scale per atom instead (see Batch)
        self.raw_gradients = raw_gradients
        self.grad_scale = torch.as_tensor(-1.0 / scale, dtype=dtype) if raw_gradients else None
        x = torch.empty((A, kx), dtype=dtype, pin_memory=pin)
        grad = torch.empty((R, K), dtype=dtype, pin_memory=pin)
        force = torch.empty((A, 3), dtype=dtype, pin_memory=pin)
        self.types = np.empty(A, np.int64)
        self.row_i = np.empty(R, np.int32)
        self.row_j = np.empty(R, np.int32)
        self.row_a = np.empty(R, np.int8)
        for g, local, pos in cs.pieces():
            if raw_gradients and bool(np.all(np.diff(pos) == 1)):  # consecutive in this set
                self._read_raw(g, local, pos, shift, scale, x, grad, force)
                continue
            atoms = concat_ranges(g.atom_start[local], g.natoms[local])
            a0 = self.atom_start[pos]
            dst = concat_ranges(a0, g.natoms[local])
            types = g.types[atoms]
            self.types[dst] = types
            B = np.asarray(g.arrays["descriptors"][atoms], dtype=np.float64)
            xs = (B - shift[types]) / scale[types]
            if option == 3:
                xs = np.concatenate([xs, np.eye(self.n_el)[types]], axis=1)
            x[torch.from_numpy(dst)] = torch.from_numpy(xs).to(dtype)
            force[torch.from_numpy(dst)] = torch.from_numpy(np.asarray(g.arrays["force_target"][atoms])).to(dtype)
            if R == 0:
                continue
            rows = concat_ranges(g.row_start[local], g.nrows[local])
            rdst = concat_ranges(self.row_start[pos], g.nrows[local])
            idx = np.asarray(g.arrays["grad_index"][rows], dtype=np.int64)
            shift_rows = np.repeat(a0, g.nrows[local])
            gi = idx[:, 0] + shift_rows
            self.row_i[rdst] = gi
            self.row_j[rdst] = idx[:, 1] + shift_rows
            self.row_a[rdst] = idx[:, 2]
            if raw_gradients:
                grad[torch.from_numpy(rdst)] = torch.from_numpy(np.asarray(g.arrays["grad_values"][rows])).to(dtype)
                continue
            # F_j^a = -sum_i dE/dB_i . dB_i/dR_j^a and dE/dB = dE/dx / scale
            gv = np.asarray(g.arrays["grad_values"][rows], dtype=np.float64)
            gv /= -scale[self.types[gi]]
            grad[torch.from_numpy(rdst)] = torch.from_numpy(gv).to(dtype)
            del gv
            g.release_pages()  # keep only the prepared copy resident
        if raw_gradients:
            cs.data.release_pages()
        self.x = x.to(self.device, non_blocking=pin)
        self.grad = grad.to(self.device, non_blocking=pin)
        self.force = force.to(self.device, non_blocking=pin)
        self.M, self.A, self.R = M, A, R

    def _read_raw(self, g, local, pos, shift, scale, x, grad, force):
        """One piece whose configurations sit one after another in this set, read straight from
        the files into place (raw gradient rows: no float64 copy, no division)."""
        a0, a1 = int(self.atom_start[pos[0]]), int(self.atom_start[pos[-1]] + self.natoms[pos[-1]])
        r0 = int(self.row_start[pos[0]])
        r1 = r0 + int(self.nrows[pos].sum())
        atom_starts, natoms = g.atom_start[local], g.natoms[local]
        types = g.types[concat_ranges(atom_starts, natoms)]
        self.types[a0:a1] = types
        B = read_config_rows(g.arrays["descriptors"], atom_starts, natoms, np.empty((a1 - a0, self.K), np.float64))
        xs = (B - shift[types]) / scale[types]
        if self.option == 3:
            xs = np.concatenate([xs, np.eye(self.n_el)[types]], axis=1)
        x[a0:a1] = torch.from_numpy(xs)
        f = read_config_rows(g.arrays["force_target"], atom_starts, natoms, np.empty((a1 - a0, 3), np.float64))
        force[a0:a1] = torch.from_numpy(f)
        if r1 == r0:
            return
        row_starts, nrows = g.row_start[local], g.nrows[local]
        idx = read_config_rows(g.arrays["grad_index"], row_starts, nrows, np.empty((r1 - r0, 3), np.int32))
        first = np.repeat(self.atom_start[pos], nrows)  # within-config atom numbers -> within-set
        self.row_i[r0:r1] = idx[:, 0] + first
        self.row_j[r0:r1] = idx[:, 1] + first
        self.row_a[r0:r1] = idx[:, 2]
        out = grad[r0:r1].numpy()
        src = g.arrays["grad_values"]
        if src.dtype == out.dtype:
            read_config_rows(src, row_starts, nrows, out)
        else:
            out[...] = read_config_rows(src, row_starts, nrows, np.empty((r1 - r0, self.K), src.dtype))

    def batches(self, order, batch_size):
        """The batches of one pass over the configurations in ``order``, built in one go
        (``batch_size``: an int, or the size of each batch, see ``batch_sizes``)."""
        order = np.asarray(order, dtype=np.int64)
        M, dev = len(order), self.device
        sizes = batch_sizes(M, batch_size)
        starts = np.cumsum(sizes) - sizes
        nb = len(starts)
        cb = np.repeat(np.arange(nb), sizes)
        nat, nr = self.natoms[order], self.nrows[order]
        atom_ids = concat_ranges(self.atom_start[order], nat)
        atom_pos = np.repeat(np.arange(M), nat)  # position of each atom's config in the pass
        atom_batch = cb[atom_pos]
        counts = None
        if self.option == 2:
            key = atom_batch * self.n_el + self.types[atom_ids]
            perm = np.argsort(key, kind="stable")
            atom_ids, atom_pos = atom_ids[perm], atom_pos[perm]
            counts = np.bincount(key, minlength=nb * self.n_el).reshape(nb, self.n_el).tolist()
        atoms_per_batch = np.bincount(atom_batch, minlength=nb)
        first_atom = np.cumsum(atoms_per_batch) - atoms_per_batch
        pos = np.empty(self.A, np.int64)
        pos[atom_ids] = np.arange(len(atom_ids)) - first_atom[atom_batch]
        atom_config = atom_pos - starts[atom_batch]
        configs_per_batch = sizes.tolist()
        n_atoms = atoms_per_batch.tolist()

        def split(arr, sizes, dtype=None):
            return torch.split(torch.as_tensor(arr, dtype=dtype, device=dev), sizes)

        atom_ids_t = torch.as_tensor(atom_ids, device=dev)
        xs = torch.split(self.x.index_select(0, atom_ids_t), n_atoms)
        forces = torch.split(self.force.index_select(0, atom_ids_t).reshape(-1), [3 * n for n in n_atoms])
        w_force = split(np.repeat(self.w_force[order][atom_pos], 3), [3 * n for n in n_atoms], self.dtype)
        energies = split(self.energy[order], configs_per_batch, self.dtype)
        w_energy = split(self.w_energy[order], configs_per_batch, self.dtype)
        atom_configs = split(atom_config, n_atoms)
        grad_scales = [None] * nb
        if self.raw_gradients and self.has_forces:
            types_t = torch.as_tensor(self.types[atom_ids], device=dev)
            grad_scales = torch.split(self.grad_scale.to(dev).index_select(0, types_t), n_atoms)
        if self.has_forces:
            row_ids = concat_ranges(self.row_start[order], nr)
            rows_per_batch = np.add.reduceat(nr, starts).tolist() if M else []
            row_i = pos[self.row_i[row_ids]]
            row_ja = pos[self.row_j[row_ids]] * 3 + self.row_a[row_ids]
            row_ids_s, row_i_s, row_ja_s = (split(a, rows_per_batch) for a in (row_ids, row_i, row_ja))
        else:
            row_ids_s = row_i_s = row_ja_s = [None] * nb
        return [
            Batch(
                x=xs[b], counts=counts[b] if counts else None, atom_config=atom_configs[b],
                n_configs=configs_per_batch[b], energy=energies[b], w_energy=w_energy[b],
                force=forces[b], w_force=w_force[b], row_ids=row_ids_s[b], row_i=row_i_s[b],
                row_ja=row_ja_s[b], grad_scale=grad_scales[b],
            )  # fmt: skip
            for b in range(nb)
        ]


# ----------------------------------------------------------------------------- stores


class MemoryStore:
    """A whole set prepared once on the training device."""

    streaming = False

    def __init__(self, cs, shift, scale, option, dtype, device):
        self.cs = cs
        self.set = cs.prepare(shift, scale, option, dtype, device)
        self.has_forces = self.set.has_forces
        cs.data.release_pages()  # the prepared copy is all that stays resident

    def __len__(self):
        return len(self.cs)

    def epoch(self, order, batch_size):
        """(prepared set, batches) pairs covering one pass in ``order``."""
        yield self.set, self.set.batches(order, batch_size)


class StreamStore:
    """Reads batches from the memory-mapped folders, a chunk of consecutive batches at a time.

    A chunk holds at most ``chunk_bytes`` of prepared data; the next chunk is read in a
    background thread while the current one trains. Mapped pages are dropped after each
    chunk so the process does not keep the files resident.
    """

    streaming = True

    def __init__(self, cs, shift, scale, option, dtype, device, chunk_bytes):
        self.cs, self.shift, self.scale = cs, shift, scale
        self.option, self.dtype, self.device = option, dtype, device
        self.chunk_bytes = max(1, int(chunk_bytes))
        self.config_bytes = cs.config_bytes(dtype)
        self.has_forces = cs.n_rows > 0 and bool(np.any(cs.data.table["fw"][cs.ids] > 0))

    def __len__(self):
        return len(self.cs)

    def chunks(self, order, batch_size):
        """Position ranges [s, e) of ``order``, whole batches each, of at most chunk_bytes."""
        order = np.asarray(order)
        sizes = batch_sizes(len(order), batch_size)
        starts = np.cumsum(sizes) - sizes
        batch_bytes = np.add.reduceat(self.config_bytes[order], starts) if len(order) else np.zeros(0)
        out, s, acc = [], 0, 0
        for b, nbytes in enumerate(batch_bytes.tolist()):
            if acc and acc + nbytes > self.chunk_bytes:
                out.append((s, int(starts[b])))
                s, acc = int(starts[b]), 0
            acc += nbytes
        if len(order):
            out.append((s, len(order)))
        return out

    def _prepare(self, order, sizes):
        """A chunk's prepared set and its batches of ``sizes`` (run in the background thread).

        The chunk's configurations are read in file order (group by group, so each group's
        rows land in one block and are copied once, straight from the map); the batches then
        visit them in ``order``. Gradient rows stay raw (no float64 copy, no division); on CUDA
        the host copies are page-locked, so the upload does not hold up the reading thread."""
        cs = self.cs
        in_file_order = np.lexsort((cs.local[order], cs.gid[order]))
        prepared = cs.prepare(
            self.shift, self.scale, self.option, self.dtype, self.device, order[in_file_order],
            pin=True, raw_gradients=True,
        )  # fmt: skip
        position = np.empty(len(order), np.int64)
        position[in_file_order] = np.arange(len(order))
        return prepared, prepared.batches(position, sizes)

    def epoch(self, order, batch_size):
        order = np.asarray(order)
        chunks = self.chunks(order, batch_size)
        sizes = batch_sizes(len(order), batch_size)
        starts = np.cumsum(sizes) - sizes
        with ThreadPoolExecutor(max_workers=1) as pool:

            def read(k):
                s, e = chunks[k]
                return pool.submit(self._prepare, order[s:e], sizes[(starts >= s) & (starts < e)])

            pending = read(0) if chunks else None
            for k in range(len(chunks)):
                prepared, batches = pending.result()
                if k + 1 < len(chunks):
                    pending = read(k + 1)
                yield prepared, batches
                del prepared, batches


def make_store(cs, shift, scale, option, dtype, device, budget_bytes=None, stream=None):
    """MemoryStore when the prepared set fits ``budget_bytes`` (or ``stream`` is False)."""
    if stream is None:
        stream = budget_bytes is not None and cs.prepared_bytes(dtype) > budget_bytes
    if stream:
        chunk = (budget_bytes or cs.prepared_bytes(dtype)) / 4
        return StreamStore(cs, shift, scale, option, dtype, device, chunk)
    return MemoryStore(cs, shift, scale, option, dtype, device)
