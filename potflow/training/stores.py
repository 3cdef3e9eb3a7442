"""Configurations ready for the network, in memory or streamed from disk.

A ``PreparedSet`` holds configurations ready for the network: standardised descriptors
x = (B - shift) / scale (one-hot columns appended where the model's ``ElementLayout`` asks) and descriptor gradients
pre-multiplied by -1/scale, so that F_j^a = sum_rows dE/dx_i . g_row. Its ``batches`` makes the
index tensors of a whole epoch in one vectorised pass (no Python loop over atoms or configs).

Stores (``make_store``): ``MemoryStore`` prepares a whole set once (on the training device);
``StreamStore`` reads consecutive batches from the memory-mapped folders in chunks of bounded
size while the previous chunk trains, and drops the mapped pages it has read, so that resident
memory follows ``pytorch.memory_budget_mb`` rather than the data set.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from potflow.data.structures import EV_PER_A3_IN_BAR
from potflow.models.network import ElementLayout
from potflow.training.datasets import batch_sizes, concat_ranges, read_config_rows


class Batch:
    """Tensors of one batch (index tensors count atoms within the batch).

    ``grad_scale`` is None when the set's gradient rows are pre-multiplied by -1/scale;
    otherwise (streamed raw rows) it holds -1/scale of each atom's element, (A_b, K).
    ``row_ids`` picks the batch's gradient rows from the set's: a slice where they follow each
    other there (a full pass in order: no copy), else an index tensor (``rows_of``). Row r
    adds dE/dB_(row_i[r]) . rows[r] to force component ``row_ja[r]`` (3 j + a). On the CPU the
    rows are instead given as a CSR pattern by atom i (``row_ptr``, ``row_col``: atom i's rows
    are row_col[row_ptr[i]:row_ptr[i+1]]; ``row_ja`` then lists the rows in that order), so
    that the force contraction and its adjoint are two sparse products (``potflow.training.loss``).
    """

    __slots__ = (
        "x", "counts", "atom_config", "n_configs", "energy", "w_energy", "force", "w_force",
        "row_ids", "row_i", "row_ja", "row_ptr", "row_col", "grad_scale", "virial", "stress", "w_stress",
    )  # fmt: skip

    def __init__(self, **kw):
        self.grad_scale = None
        self.virial = self.stress = self.w_stress = None
        self.row_i = self.row_ptr = self.row_col = None
        for k, v in kw.items():
            setattr(self, k, v)

    def rows_of(self, grad):
        """This batch's gradient rows of the set's ``grad`` (a view when they are consecutive)."""
        if isinstance(self.row_ids, slice):
            return grad[self.row_ids]
        return grad.index_select(0, self.row_ids)


class PreparedSet:
    """Standardised inputs and scaled gradients of some configurations, on the training device.

    Host arrays (numpy) describe the layout; ``x`` (A, Kx), ``grad`` (R, K) and ``force``
    (A, 3) are tensors on ``device``. Gradient rows keep the within-set atom numbers of
    their atom i and of the displaced atom j (and the direction a). With ``pin`` and a CUDA
    device the host copies are page-locked and sent without waiting (streamed chunks).
    """

    def __init__(self, cs, shift, scale, layout, dtype, device, pin=False, raw_gradients=False):
        data = cs.data
        # the model's layout decides the inputs: one-hot columns, atoms grouped by element
        self.layout, self.n_el = ElementLayout(int(layout)), len(data.elements)
        self.device, self.dtype = torch.device(device), dtype
        self.K = K = data.num_desc
        kx = self.layout.input_width(K, self.n_el)
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
        # stresses: targets (M, 6) in bar and dB/d(strain) pre-multiplied so that the stress is
        # P_mv = sum_(i in m) dE/dx_i . virial[i, v]  (P = -(1/V) dE/d(strain), in bar)
        self.stress = t["stress"][cs.ids]
        self.volume = t["volume"][cs.ids]
        self.w_stress = t["vw"][cs.ids] / 6.0
        self.has_stress = data.has_stress and bool(np.any(self.w_stress > 0))
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
        virial = torch.empty((A, 6, K) if self.has_stress else (0, 6, K), dtype=dtype, pin_memory=pin)
        for g, local, pos in cs.pieces():
            if self.has_stress:
                self._read_virial(g, local, pos, scale, virial)
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
            if self.layout.one_hot_input:
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
        self.virial = virial.to(self.device, non_blocking=pin)
        self.M, self.A, self.R = M, A, R
        # the force contraction as sparse products on the CPU; index_add (atomics) on a GPU
        self.sparse_rows = self.device.type == "cpu"

    def _read_virial(self, g, local, pos, scale, virial):
        """dB/d(strain) of one piece's atoms, times -(bar/V) / scale (see ``stress``)."""
        natoms = g.natoms[local]
        atoms = concat_ranges(g.atom_start[local], natoms)
        rows = (6 * atoms[:, None] + np.arange(6)).ravel()
        D = np.asarray(g.arrays["virial_values"][rows], dtype=np.float64).reshape(len(atoms), 6, self.K)
        volume = np.repeat(self.volume[pos], natoms)
        D *= (-EV_PER_A3_IN_BAR / volume)[:, None, None] / scale[g.types[atoms]][:, None, :]
        virial[torch.from_numpy(concat_ranges(self.atom_start[pos], natoms))] = torch.from_numpy(D).to(self.dtype)

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
        if self.layout.one_hot_input:
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

    def _row_pattern(self, row_i, row_ja, rows_per_batch, first_atom, n_atoms, index):
        """Per batch, the CSR pattern of its gradient rows by atom i (row_ptr, row_col) and
        ``row_ja`` in that order. The rows of one atom follow each other in the files, so the
        pattern is the rows' own order (row_col a view of one arange) unless the batch orders
        its atoms otherwise (option 2: by element); then whole runs of rows are reordered."""
        dev = self.device
        atom = np.repeat(first_atom.astype(index), rows_per_batch)
        atom += row_i  # atom i's position in the pass
        first_row = np.cumsum(rows_per_batch) - rows_per_batch
        n = np.asarray(n_atoms)
        ptr = np.concatenate([[0], np.cumsum(np.bincount(atom, minlength=int(n.sum())))])
        row_ptr = ptr[concat_ranges(first_atom, n + 1)] - np.repeat(first_row, n + 1)
        row_ptr_s = torch.split(torch.as_tensor(row_ptr.astype(index), device=dev), (n + 1).tolist())
        if len(atom) < 2 or bool(np.all(atom[1:] >= atom[:-1])):
            arange = torch.arange(max(rows_per_batch, default=0), dtype=torch.from_numpy(atom[:0]).dtype, device=dev)
            return row_ptr_s, [arange[:k] for k in rows_per_batch], row_ja
        run_start = np.flatnonzero(np.concatenate([[True], atom[1:] != atom[:-1]]))
        run_atom = atom[run_start]
        del atom
        if len(np.unique(run_atom)) == len(run_atom):  # one run per atom: reorder the runs
            run_len = np.diff(np.append(run_start, len(row_i)))
            by_atom = np.argsort(run_atom)
            perm = concat_ranges(run_start[by_atom], run_len[by_atom], dtype=index)
        else:  # rows of an atom apart: sort the rows themselves
            atom = np.repeat(first_atom.astype(index), rows_per_batch) + row_i
            perm = np.argsort(atom, kind="stable").astype(index)
            del atom
        row_ja = row_ja[perm]
        perm -= np.repeat(first_row.astype(index), rows_per_batch)  # within the batch
        return row_ptr_s, torch.split(torch.as_tensor(perm, device=dev), rows_per_batch), row_ja

    def batches(self, order, batch_size):
        """The batches of one pass over the configurations in ``order``, built in one go
        (``batch_size``: an int, or the size of each batch, see ``batch_sizes``). Index tensors
        are int32 (half the memory and bandwidth of int64) where the counts allow."""
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
        if self.layout.per_element_networks:
            key = atom_batch * self.n_el + self.types[atom_ids]
            perm = np.argsort(key, kind="stable")
            atom_ids, atom_pos = atom_ids[perm], atom_pos[perm]
            counts = np.bincount(key, minlength=nb * self.n_el).reshape(nb, self.n_el).tolist()
        atoms_per_batch = np.bincount(atom_batch, minlength=nb)
        first_atom = np.cumsum(atoms_per_batch) - atoms_per_batch
        index = np.int32 if max(self.A * 3, self.R) < 2**31 else np.int64
        pos = np.empty(self.A, index)
        pos[atom_ids] = np.arange(len(atom_ids)) - first_atom[atom_batch]
        atom_config = (atom_pos - starts[atom_batch]).astype(index)
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
        virials = stresses = w_stresses = [None] * nb
        if self.has_stress:
            virials = torch.split(self.virial.index_select(0, atom_ids_t), n_atoms)
            stresses = torch.split(torch.as_tensor(self.stress[order], dtype=self.dtype, device=dev), configs_per_batch)
            w_stresses = split(self.w_stress[order], configs_per_batch, self.dtype)
        if self.raw_gradients and self.has_forces:
            types_t = torch.as_tensor(self.types[atom_ids], device=dev)
            grad_scales = torch.split(self.grad_scale.to(dev).index_select(0, types_t), n_atoms)
        if self.has_forces:
            row_ids = concat_ranges(self.row_start[order], nr, dtype=index)
            rows_per_batch = np.add.reduceat(nr, starts).tolist() if M else []
            row_i = pos[self.row_i[row_ids]]
            row_ja = pos[self.row_j[row_ids]]
            row_ja *= 3
            row_ja += self.row_a[row_ids]
            row_i_s, row_ptr_s, row_col_s = [None] * nb, [None] * nb, [None] * nb
            if self.sparse_rows:
                row_ptr_s, row_col_s, row_ja = self._row_pattern(row_i, row_ja, rows_per_batch, first_atom, n_atoms, index)
            else:
                row_i_s = split(row_i, rows_per_batch)
            row_ja_s = split(row_ja, rows_per_batch)
            # a batch whose configurations' rows follow each other in the set takes a slice
            follows = np.ones(M, bool)
            follows[1:] = self.row_start[order[1:]] == self.row_start[order[:-1]] + nr[:-1]
            follows[starts] = True
            consecutive = np.logical_and.reduceat(follows, starts) if M else np.zeros(0, bool)
            first_row = self.row_start[order[starts]] if M else np.zeros(0, np.int64)
            if consecutive.all():
                row_ids_s = [slice(r, r + n) for r, n in zip(first_row.tolist(), rows_per_batch, strict=True)]
            else:
                row_ids_s = list(split(row_ids, rows_per_batch))
                for b in np.flatnonzero(consecutive).tolist():
                    row_ids_s[b] = slice(int(first_row[b]), int(first_row[b]) + rows_per_batch[b])
            del row_ids, row_i, row_ja
        else:
            row_ids_s = row_i_s = row_ja_s = row_ptr_s = row_col_s = [None] * nb
        return [
            Batch(
                x=xs[b], counts=counts[b] if counts else None, atom_config=atom_configs[b],
                n_configs=configs_per_batch[b], energy=energies[b], w_energy=w_energy[b],
                force=forces[b], w_force=w_force[b], row_ids=row_ids_s[b], row_i=row_i_s[b],
                row_ja=row_ja_s[b], row_ptr=row_ptr_s[b], row_col=row_col_s[b],
                grad_scale=grad_scales[b], virial=virials[b],
                stress=stresses[b], w_stress=w_stresses[b],
            )  # fmt: skip
            for b in range(nb)
        ]


class MemoryStore:
    """A whole set prepared once on the training device."""

    streaming = False

    def __init__(self, cs, shift, scale, layout, dtype, device):
        self.cs = cs
        self.set = PreparedSet(cs, shift, scale, layout, dtype, device)
        self.has_forces = self.set.has_forces
        self._in_order = None  # (batch sizes, batches) of the last pass in the set's order
        cs.data.release_pages()  # the prepared copy is all that stays resident

    def __len__(self):
        return len(self.cs)

    def epoch(self, order, batch_size):
        """(prepared set, batches) pairs covering one pass in ``order``. A pass in the set's own
        order (validation, each full-batch L-BFGS evaluation: the same pass every time) is laid
        out once and kept."""
        order = np.asarray(order)
        if len(order) == len(self.cs) and np.array_equal(order, np.arange(len(order))):
            key = tuple(np.atleast_1d(batch_size).tolist())
            if self._in_order is None or self._in_order[0] != key:
                self._in_order = None  # the old layout goes before the new one is made
                self._in_order = (key, self.set.batches(order, batch_size))
            yield self.set, self._in_order[1]
            return
        yield self.set, self.set.batches(order, batch_size)


class StreamStore:
    """Reads batches from the memory-mapped folders, a chunk of consecutive batches at a time.

    A chunk holds at most ``chunk_bytes`` of prepared data; the next chunk is read in a
    background thread while the current one trains. Mapped pages are dropped after each
    chunk so the process does not keep the files resident.
    """

    streaming = True

    def __init__(self, cs, shift, scale, layout, dtype, device, chunk_bytes):
        self.cs, self.shift, self.scale = cs, shift, scale
        self.layout, self.dtype, self.device = layout, dtype, device
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
        prepared = PreparedSet(
            cs.take(order[in_file_order]), self.shift, self.scale, self.layout, self.dtype,
            self.device, pin=True, raw_gradients=True,
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


def make_store(cs, shift, scale, layout, dtype, device, budget_bytes=None, stream=None):
    """MemoryStore when the prepared set fits ``budget_bytes`` (or ``stream`` is False).

    ``layout``: the model's ``ElementLayout`` (or its ``multi_element_option`` number)."""
    if stream is None:
        stream = budget_bytes is not None and cs.prepared_bytes(dtype) > budget_bytes
    if stream:
        chunk = (budget_bytes or cs.prepared_bytes(dtype)) / 4
        return StreamStore(cs, shift, scale, layout, dtype, device, chunk)
    return MemoryStore(cs, shift, scale, layout, dtype, device)
