"""Training data of a fit: its groups' descriptor folders, split and targets.

Targets: energy E_m + sum_i eshift[element_i] - E_ref (FitSNAP adds [ESHIFT] to the DFT energy),
force F - F_ref and, in a fit with stresses, stress S - S_ref (bar, Voigt); weights w^E_m, w^F_m,
w^V_m from the group (or the global [PYTORCH] weights).
"""

import math
import os
from pathlib import Path

import numpy as np
import torch

from potflow.config.groups import group_options
from potflow.config.load import elements as config_elements
from potflow.data.splits import split_group
from potflow.descriptors.folders import has_stress, open_group, release_pages
from potflow.errors import PotflowInputError
from potflow.fileio import write_text


def concat_ranges(starts, lengths, dtype=np.int64):
    """Concatenation of arange(s, s + n) over (s, n) pairs, vectorised (``dtype``: int32 halves
    the memory of long index lists whose values fit)."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype)
    ends = np.cumsum(lengths)
    out = np.arange(total, dtype=dtype)
    out += np.repeat((starts - (ends - lengths)).astype(dtype), lengths)
    return out


def batch_sizes(n, batch_size):
    """Configurations in each batch of a pass over n: every ``batch_size`` (the last one
    smaller), or the sizes given (a sequence of positive counts adding up to n)."""
    if np.ndim(batch_size) == 0:
        return np.diff(np.append(np.arange(0, n, int(batch_size)), n)).astype(np.int64)
    sizes = np.asarray(batch_size, dtype=np.int64)
    if sizes.sum() != n or (sizes <= 0).any():
        raise ValueError(f"batch sizes {sizes.tolist()} do not split {n} configurations")
    return sizes


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
        self.has_stress = has_stress(self.meta)
        if len(self.natoms) == 0:
            raise PotflowInputError(self.folder, "descriptor folder holds no configurations")

    def release_pages(self):
        """Drop the mapped pages read so far from this process (the page cache keeps them)."""
        release_pages(self.arrays)


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
        self.has_stress = all(g.has_stress for g in self.groups)
        tcfg, gcfg = cfg["pytorch"], cfg["groups"]
        eshift = np.array([float(cfg["eshift"].get(el, 0.0)) for el in self.elements])
        self.notes = []
        cols = {k: [] for k in ("group_id", "index", "natoms", "set", "file", "energy", "ew", "fw", "vw", "stress", "volume")}
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
            vw = float(opts["vweight"]) if self.has_stress else 0.0
            stress, volume = self._stress_targets(g, vw)
            cols["vw"].append(np.full(n, vw))
            cols["stress"].append(stress)
            cols["volume"].append(volume)
        self.table = {k: np.concatenate(v) for k, v in cols.items()}
        self.table["set"] = self.table["set"].astype(str)

    def _stress_targets(self, g, vweight):
        """(stress targets (n, 6) bar, volumes (n,)) of a group; zeros without stresses. A group
        with a virial weight needs every configuration's stress."""
        n = len(g.natoms)
        if not self.has_stress:
            return np.zeros((n, 6)), np.ones(n)
        target = np.asarray(g.arrays["stress_target"], dtype=np.float64)
        missing = ~np.isfinite(target).all(axis=1)
        if vweight > 0 and missing.any():
            name = str(np.asarray(g.arrays["files"])[np.flatnonzero(missing)[0]])
            raise PotflowInputError(
                f"{g.folder} [{name}]",
                f"configuration has no stress but group {g.name} has vweight {vweight:g} > 0 "
                f"({int(missing.sum())} of {n} lack one): give the group vweight 0 or data with stresses",
            )
        return np.where(missing[:, None], 0.0, target), np.asarray(g.arrays["volume"], dtype=np.float64)

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
        per_atom = 2 * kx * s + 6 * s + 48
        if self.data.has_stress:  # dB/d(strain), 6 K per atom, and its per-epoch copy
            per_atom += 2 * 6 * self.data.num_desc * s
        return self.natoms * per_atom + self.nrows * (self.data.num_desc * s + 9 + 24)

    def prepared_bytes(self, dtype):
        return int(self.config_bytes(dtype).sum())

    def take(self, order):
        """The configurations at positions ``order`` in this set."""
        return ConfigSet(self.data, self.ids[np.asarray(order)])


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
