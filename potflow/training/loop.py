"""Fit the network: FitSNAP's [PYTORCH] training, with its loss, checkpoints and restarts done right.

Loss of a batch of M configurations (targets after the reference potential and eshift):

  L = (1/M) sum_m [ w^E_m ((E_pred_m - E_m) / N_m)^2 + w^F_m / (3 N_m) sum_i |F_pred_mi - F_mi|^2 ]

The epoch's training loss is the mean of its batch losses (FitSNAP's "batch averaged" loss);
the validation loss is L over all validation configurations, computed without a graph.

Files: ``model`` (the one selected model: best validation epoch by default, ``model_selection``),
``checkpoint`` (``save_state_output``: state dicts only, never a pickled object), ``loss``
(loss_vs_epochs.dat: epoch, train, validation), ``split`` (split.tsv). While a fit runs, its state
is written atomically every ``save_freq`` epochs to ``resume`` (to ``checkpoint`` when there is
no resume path); a rerun with the same settings continues from there, and the file is removed
when the fit ends (Snakemake deletes a job's declared outputs before rerunning it, so the resume
state must not be one of them).

Under torchrun (several processes: GPUs or nodes) each rank trains on its share of every
global batch and the gradients are summed, which gives the fit of one process with the same
batches (potflow/training/collectives.py says how); rank 0 writes the files.

``save_state_input`` restarts from a checkpoint: its weights, optimiser, schedule, random
streams and loss history, continuing to ``num_epochs`` epochs in all (CPU runs end exactly where
an uninterrupted run ends). With ``num_epochs: 1`` (FitSNAP's way of asking for errors of an
existing model), or when the checkpoint already has ``num_epochs`` epochs, the loaded model is
evaluated and written out without training. A potflow model file (model.pt) also works as
``save_state_input``: weights and standardisation only, with a fresh optimiser.
"""

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from potflow.fileio import atomic_path, write_torch
from potflow.models.files import save_model
from potflow.training import collectives
from potflow.training.checkpoints import checkpoint_record
from potflow.training.epoch import run_epoch, validation_loss
from potflow.training.loss import big_batch, set_loss
from potflow.training.selection import select_model
from potflow.training.setup import setup_fit


@dataclass
class TrainPaths:
    model: Path
    checkpoint: Path
    loss: Path
    split: Path
    resume: Path | None = None


class _Screen:
    """FitSNAP's screen lines, printed above a tqdm progress bar."""

    def __init__(self, total, initial, progress):
        # in a log file (no terminal) the bar is drawn rarely and the lines are printed plainly
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=total, initial=initial, desc="training", unit="epoch", disable=not progress,
            file=sys.stderr, mininterval=1.0 if self.tty else 30.0, dynamic_ncols=True,
        )  # fmt: skip

    def lines(self, *lines):
        if self.tty:
            tqdm.write("\n".join(lines), file=sys.stdout)
        else:
            print("\n".join(lines))

    def step(self, train, val):
        self.bar.set_postfix(train=f"{train:.4g}", val=f"{val:.4g}", refresh=False)
        self.bar.update(1)

    def close(self):
        self.bar.close()


def train(cfg, folders, paths, progress=True, stream=None):
    """Fit the model on the descriptor folders; write the files in ``paths``; return a summary.

    In a process group (torchrun, ``collectives.init_from_env``) every rank calls this with the
    same arguments; rank 0 alone prints and writes the files.
    """
    if collectives.ranks().main:
        return _train(cfg, folders, paths, progress, stream)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        return _train(cfg, folders, paths, False, stream)


def _end_epoch(fit, loaded_input):
    num_epochs = fit.settings["num_epochs"]
    end = fit.epochs_done if (loaded_input and num_epochs == 1) else max(num_epochs, fit.epochs_done)
    return fit.epochs_done if fit.selection.stopped else end


def _announce(fit, source):
    tcfg, ranks, stores = fit.settings, fit.ranks, fit.stores
    print(
        f"potflow training: {len(fit.train_set)} train / {len(fit.val_set)} validation / "
        f"{len(fit.data.ids('test'))} test configurations, {fit.data.num_desc} descriptors, "
        f"option {int(fit.model.layout)}, {tcfg['dtype']} on {fit.device}, "
        f"{torch.get_num_threads()} thread(s), data {'streamed' if stores.streamed else 'in memory'} "
        f"({stores.total_bytes / 2**20:.1f} MB{' per process' if ranks.world > 1 else ''}), start: {source}"
        + (f", {ranks.world} processes" if ranks.world > 1 else "")
        + (f" at epoch {fit.epochs_done}" if fit.epochs_done else "")
    )
    sys.stdout.flush()


def _train(cfg, folders, paths, progress, stream):
    fit = setup_fit(cfg, folders, paths.resume, stream)
    tcfg, start = fit.settings, fit.start
    end = _end_epoch(fit, start.loaded_input)
    _announce(fit, start.source)

    first = fit.epochs_done
    initial_val = validation_loss(fit) if first == 0 and first < end else math.nan
    if math.isfinite(initial_val):
        print(f"validation loss before training: {initial_val}")
    epoch_seconds = []
    periodic = paths.resume if paths.resume is not None else paths.checkpoint
    screen = _Screen(end, first, progress)
    try:
        for epoch in range(first, end):
            t0 = time.perf_counter()
            train_loss, val_loss = run_epoch(fit, epoch)
            stopped = fit.selection.stopped
            if fit.ranks.main and (fit.epochs_done % tcfg["save_freq"] == 0 or stopped or fit.epochs_done == end):
                write_torch(periodic, checkpoint_record(fit))
            seconds = time.perf_counter() - t0
            epoch_seconds.append(seconds)
            screen.lines(
                f"----- epoch: {epoch}",
                f"Batch averaged train/val loss: {train_loss} {val_loss}",
                f"Epoch time {seconds}",
            )
            screen.step(train_loss, val_loss)
            if stopped:
                screen.lines(f"early stopping: no validation improvement for {fit.selection.patience} epochs")
                break
    finally:
        screen.close()

    if fit.epochs_done == first:
        _evaluate_without_training(fit)
    info = _write_outputs(fit, paths)
    print(f"model: {paths.model} ({info['selection']} epoch {info['epoch']}, validation loss {info['val_loss']})")
    return {
        "info": info, "history": fit.history, "epochs_done": fit.epochs_done,
        "streamed": fit.stores.streamed, "epoch_seconds": epoch_seconds,
        "initial_val_loss": initial_val, "last_state": fit.last_state,
    }  # fmt: skip


def _evaluate_without_training(fit):
    """Nothing was trained: the losses of the loaded model as it is."""
    stores = fit.stores
    batch = big_batch(stores.train, fit.settings["batch_size"]) if stores.streamed else None
    evaluated = (
        set_loss(fit.model, stores.train, len(fit.train_set), batch, fit.device),
        validation_loss(fit),
    )
    print(f"evaluation of {fit.start.source} (no training): train/val loss: {evaluated[0]} {evaluated[1]}")
    if not fit.history:
        fit.history = [[float(max(fit.epochs_done - 1, 0)), evaluated[0], evaluated[1]]]


def _write_outputs(fit, paths):
    """model.pt (the selected model), the final checkpoint (the last epoch), loss file, split."""
    model = fit.model
    fit.last_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    info = select_model(
        model, fit.settings["model_selection"], fit.selection, fit.history, fit.start, fit.epochs_done
    )
    if fit.ranks.main:
        save_model(paths.model, model, **info)
    model.load_state_dict(fit.last_state)
    if fit.ranks.main:
        write_torch(paths.checkpoint, checkpoint_record(fit))
        write_loss_file(paths.loss, fit.history)
        fit.data.write_split(paths.split)
        if paths.resume is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(paths.resume)
    collectives.barrier()  # the files are complete when any rank returns
    return info


def write_loss_file(path, history):
    """loss_vs_epochs.dat as FitSNAP writes it (np.savetxt: epoch, train loss, validation loss)."""
    arr = np.asarray(history, dtype=float).reshape(-1, 3)
    with atomic_path(path) as tmp:
        np.savetxt(tmp, arr)
