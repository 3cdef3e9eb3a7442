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
batches (potflow/distributed.py says how); rank 0 writes the files.

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

from potflow import distributed
from potflow.config import descriptor_key, settings_hash
from potflow.dataset import ConfigSet, FitData, batch_sizes, make_store
from potflow.errors import PotflowInputError
from potflow.fileio import atomic_path, clean_stale_temporaries, write_torch
from potflow.model import (
    AtomicEnergyModel,
    load_refusal,
    model_from_record,
    model_record,
    save_model,
)

CHECKPOINT_FORMAT = "potflow-checkpoint"
# pytorch keys that do not change the course of a fit: a resume may differ in them
_NOT_IN_RUN = ("num_epochs", "save_state_output", "save_freq", "threads", "device", "model_selection", "memory_budget_mb")


@dataclass
class TrainPaths:
    model: Path
    checkpoint: Path
    loss: Path
    split: Path
    resume: Path | None = None


# ----------------------------------------------------------------------------- loss


def batch_loss_sum(model, batch, grad):
    """Sum over the batch's configurations of the per-configuration loss (0-d tensor)."""
    forces = batch.row_ids is not None
    e_atom, dedx = model.standardised_energy_and_gradient(batch.x, batch.counts, need_gradient=forces)
    if forces and batch.grad_scale is not None:  # raw rows (streamed): dE/dB = dE/dx / scale
        dedx = dedx * batch.grad_scale
    energy = e_atom.new_zeros(batch.n_configs).index_add(0, batch.atom_config, e_atom)
    de = energy - batch.energy
    total = torch.dot(batch.w_energy, de * de)
    if forces:
        rows = grad.index_select(0, batch.row_ids)
        contrib = (dedx.index_select(0, batch.row_i) * rows).sum(1)
        force = e_atom.new_zeros(batch.force.shape[0]).index_add(0, batch.row_ja, contrib)
        df = force - batch.force
        total = total + torch.dot(batch.w_force, df * df)
    return total


@torch.no_grad()
def set_loss_sum(model, store, batch_size=None):
    """Sum of the per-configuration losses over a store (0 when it is empty); no graph is built."""
    total = 0.0
    if store is None or len(store) == 0:
        return total
    model.eval()
    order = np.arange(len(store))
    for prepared, batches in store.epoch(order, batch_size or len(store)):
        for b in batches:
            total = total + batch_loss_sum(model, b, prepared.grad)
    return total


def set_loss(model, store, n_configs, batch_size=None, device="cpu"):
    """L over the ``n_configs`` configurations of a set, of which ``store`` holds this rank's
    share (all of them in one process); nan for an empty set."""
    if not n_configs:
        return float("nan")
    return distributed.sum_across([set_loss_sum(model, store, batch_size)], device)[0] / n_configs


def big_batch(store, at_least):
    """Configurations per batch that fill a streamed chunk (for graph-free evaluation)."""
    if store is None or not len(store):
        return at_least
    return max(at_least, int(store.chunk_bytes // max(1, int(store.config_bytes.max()))))


# ----------------------------------------------------------------------------- settings


def resolve_device(name, ranks=None):
    """The training device; with several processes, GPU LOCAL_RANK of those a process sees."""
    ranks = ranks or distributed.Ranks()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PotflowInputError("config", f"config field 'pytorch.device': '{name}' but CUDA is not available")
    if dev.type == "cuda" and ranks.world > 1:
        if dev.index is not None:
            raise PotflowInputError(
                "config", f"config field 'pytorch.device': '{name}' names one GPU but training runs in "
                f"{ranks.world} processes (one GPU each); use auto or cuda"
            )
        if ranks.local_rank >= torch.cuda.device_count():
            raise PotflowInputError(
                "resources.train_gpus", f"{ranks.world} training processes on this node but it shows "
                f"{torch.cuda.device_count()} GPU(s) (CUDA_VISIBLE_DEVICES)"
            )
        dev = torch.device("cuda", ranks.local_rank)
    return dev


def model_settings(cfg, model):
    """What a checkpoint must share with the config to be loaded at all."""
    return {"hyperparameters": model.hyperparameters(), "descriptor_key": descriptor_key(cfg)}


def run_settings(cfg, group_names):
    """What a resume state must share with the config to continue the same fit."""
    tcfg = {k: v for k, v in cfg["pytorch"].items() if k not in _NOT_IN_RUN}
    if tcfg["scheduler"]["type"] == "cosine":
        tcfg["num_epochs"] = cfg["pytorch"]["num_epochs"]  # the schedule's length
    return {
        "pytorch": tcfg,
        "groups": cfg["groups"],
        "eshift": cfg["eshift"],
        "descriptor_key": descriptor_key(cfg),
        "group_names": list(group_names),
    }


def make_scheduler(optimizer, cfg):
    s = cfg["pytorch"]["scheduler"]
    if s["type"] == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=s["factor"], patience=s["patience"], min_lr=s["min_lr"]
        )
    if s["type"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s["step_size"], gamma=s["factor"])
    if s["type"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, cfg["pytorch"]["num_epochs"]), eta_min=s["min_lr"]
        )
    return None


# ----------------------------------------------------------------------------- checkpoints


def read_checkpoint(path, where=None):
    """A checkpoint or model record, read with weights_only=True (never unpickles objects)."""
    where = where or path
    try:
        rec = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PotflowInputError(where, "file does not exist") from None
    except Exception as exc:
        msg = load_refusal(exc)
        raise PotflowInputError(where, f"not a readable potflow checkpoint (truncated or foreign; refused: {msg})") from None
    if not isinstance(rec, dict) or rec.get("format") not in (CHECKPOINT_FORMAT, "potflow-model"):
        raise PotflowInputError(where, "not a potflow checkpoint or model file")
    return rec


def check_compatible(rec, cfg, model, where):
    """Refuse a checkpoint made for other elements, another network or other descriptors."""
    hp = rec["model"]["hyperparameters"] if rec["format"] == CHECKPOINT_FORMAT else rec["hyperparameters"]
    if list(hp["elements"]) != list(model.elements):
        raise PotflowInputError(
            where, f"checkpoint is for elements {list(hp['elements'])} but the config has {model.elements}"
        )
    mine = model.hyperparameters()
    for key in ("num_desc", "hidden", "option", "activation"):
        if hp[key] != mine[key]:
            raise PotflowInputError(where, f"checkpoint has {key} {hp[key]} but the config gives {mine[key]}")
    want = settings_hash(model_settings(cfg, model))
    if rec["format"] == CHECKPOINT_FORMAT and rec.get("model_hash") != want:
        raise PotflowInputError(where, "checkpoint was made from descriptors with other settings")




def start_state(cfg, model, resume, run_hash, clean=True):
    """(record or None, source, from save_state_input): where a fit starts.

    A resume state of the same fit (same run hash) wins; a resume state of other settings is
    ignored; then ``save_state_input``; else a new model. ``clean``: remove the temporaries a
    killed write left (one process of several does it).
    """
    tcfg = cfg["pytorch"]
    if resume is not None:
        if clean:
            clean_stale_temporaries(resume)
        if Path(resume).exists():
            try:
                rec = read_checkpoint(resume)
            except PotflowInputError as exc:
                print(f"ignoring resume state: {exc}")
                rec = None
            if rec is not None and rec.get("run_hash") == run_hash:
                check_compatible(rec, cfg, model, resume)
                return rec, f"resume state {resume}", False
            if rec is not None:
                print(f"ignoring resume state {resume}: it belongs to a fit with other settings")
    if tcfg["save_state_input"]:
        where = f"config pytorch.save_state_input ({tcfg['save_state_input']})"
        path = Path(tcfg["save_state_input"])
        if not path.exists():
            raise PotflowInputError(
                where, "file does not exist (a rule's own outputs are removed before it runs: "
                "copy a checkpoint elsewhere to start from it)"
            )
        rec = read_checkpoint(path, where)
        check_compatible(rec, cfg, model, where)
        return rec, str(path), True
    return None, "new", False


# ----------------------------------------------------------------------------- the loop


class _Screen:
    """FitSNAP's screen lines, printed above a tqdm progress bar."""

    def __init__(self, total, initial, progress):
        from tqdm import tqdm

        # in a log file (no terminal) the bar is drawn rarely and the lines are printed plainly
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=total, initial=initial, desc="training", unit="epoch", disable=not progress,
            file=sys.stderr, mininterval=1.0 if self.tty else 30.0, dynamic_ncols=True,
        )  # fmt: skip

    def lines(self, *lines):
        from tqdm import tqdm

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

    In a process group (torchrun, ``distributed.init_from_env``) every rank calls this with the
    same arguments; rank 0 alone prints and writes the files.
    """
    if distributed.ranks().main:
        return _train(cfg, folders, paths, progress, stream)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        return _train(cfg, folders, paths, False, stream)


def _batches_of_pass(store, order, sizes):
    """(gradient rows, batch) of one pass in ``order``, one batch at a time; sizes 0 (a rank
    without configurations in a global batch) give no batch."""
    for prepared, batches in store.epoch(order, sizes[sizes > 0]):
        for b in batches:
            yield prepared.grad, b


def _train(cfg, folders, paths, progress, stream):
    tcfg = cfg["pytorch"]
    ranks = distributed.ranks()
    if tcfg["threads"] > 0:
        torch.set_num_threads(tcfg["threads"])
    dtype = {"float32": torch.float32, "float64": torch.float64}[tcfg["dtype"]]
    device = resolve_device(tcfg["device"], ranks)
    data = FitData(cfg, folders)
    train_cs, val_cs = data.subset("train"), data.subset("val")
    bs = tcfg["batch_size"]
    if bs > len(train_cs):
        raise PotflowInputError(
            "config", f"config field 'pytorch.batch_size': {bs} is larger than the training set ({len(train_cs)} configurations)"
        )
    if ranks.world > len(train_cs):
        raise PotflowInputError(
            "config", f"config field 'resources.train_gpus': {ranks.world} training processes but "
            f"{len(train_cs)} training configurations"
        )
    for note in data.notes:
        print(note)

    seed = tcfg["seed"] if tcfg["manual_seed_flag"] else int.from_bytes(os.urandom(4), "little")
    seed = distributed.broadcast_int(seed, device)  # one shuffle for all ranks
    torch.manual_seed(seed)
    layers = tcfg["layer_sizes"]
    model = AtomicEnergyModel(
        data.num_desc, layers[1:-1], data.elements, tcfg["multi_element_option"], tcfg["activation"]
    ).to(dtype)
    model_hash = settings_hash(model_settings(cfg, model))
    run_hash = settings_hash(run_settings(cfg, [g.name for g in data.groups]))

    state, source, loaded_input = start_state(cfg, model, paths.resume, run_hash, clean=ranks.main)
    epochs_done, history, best = 0, [], None
    bad_epochs, stopped = 0, False
    if state is None:
        if ranks.main:  # statistics of the whole training set; the other ranks receive them
            model.set_standardisation_moments(*train_cs.moments())
            model.set_energy_offsets(*train_cs.energy_offsets())
    elif state["format"] == CHECKPOINT_FORMAT:
        model.load_state_dict(state["model"]["state_dict"])
        epochs_done = int(state["epochs_done"])
        history = [list(map(float, row)) for row in state["history"]]
        best = state["best"]
        bad_epochs = int(state["early_stopping"]["bad_epochs"])
        stopped = bool(state["early_stopping"]["stopped"])
        seed = int(state["seed"])
    else:  # a model file: weights and standardisation only
        model.load_state_dict(model_from_record(state, source).state_dict())
        epochs_done = int(state.get("info", {}).get("epochs_trained", 0))
    model.to(device=device, dtype=dtype)
    distributed.broadcast_module(model)  # rank 0's weights, shift and scale on every rank

    # the fused step is one kernel per step (much less Python overhead at small batches)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg["learning_rate"], fused=True)
    scheduler = make_scheduler(optimizer, cfg)
    shuffle = torch.Generator().manual_seed(seed)
    if state is not None and state["format"] == CHECKPOINT_FORMAT:
        # optimiser, schedule and random streams continue where the checkpoint stopped
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        shuffle.set_state(state["rng"]["shuffle"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if loaded_input and scheduler is None:
            for group in optimizer.param_groups:  # an explicit restart takes the config's rate
                group["lr"] = tcfg["learning_rate"]

    shift = model.shift.detach().cpu().double().numpy()
    scale = model.scale.detach().cpu().double().numpy()
    budget = tcfg["memory_budget_mb"]
    budget = None if budget is None else int(budget * 2**20)
    # a rank holds (or streams) its own share of the configurations: all of them in one process
    train_mine = ConfigSet(data, train_cs.ids[ranks.share(len(train_cs))])
    val_mine = ConfigSet(data, val_cs.ids[ranks.share(len(val_cs))])
    total_bytes = train_mine.prepared_bytes(dtype) + val_mine.prepared_bytes(dtype)
    if stream is None:
        stream = budget is not None and total_bytes > budget
    share = None if budget is None else budget // 2
    option = model.option
    train_store = make_store(train_mine, shift, scale, option, dtype, device, share, stream)
    val_store = make_store(val_mine, shift, scale, option, dtype, device, share, stream) if len(val_mine) else None
    # no graph in validation: big batches, as many configurations as a streamed chunk holds
    val_bs = len(val_mine) if not stream else big_batch(val_store, bs)
    n_val = len(val_cs)

    num_epochs = tcfg["num_epochs"]
    end = epochs_done if (loaded_input and num_epochs == 1) else max(num_epochs, epochs_done)
    if stopped:
        end = epochs_done
    print(
        f"potflow training: {len(train_cs)} train / {len(val_cs)} validation / {len(data.ids('test'))} test "
        f"configurations, {data.num_desc} descriptors, option {option}, {tcfg['dtype']} on {device}, "
        f"{torch.get_num_threads()} thread(s), data {'streamed' if stream else 'in memory'} "
        f"({total_bytes / 2**20:.1f} MB{' per process' if ranks.world > 1 else ''}), start: {source}"
        + (f", {ranks.world} processes" if ranks.world > 1 else "")
        + (f" at epoch {epochs_done}" if epochs_done else "")
    )
    sys.stdout.flush()

    has_val = n_val > 0
    best_val = best["val_loss"] if best else math.inf
    save_freq = tcfg["save_freq"]
    screen = _Screen(end, epochs_done, progress)

    def record():
        return {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "model": model_record(model),
            "best": best,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "epochs_done": epochs_done,
            "history": history,
            "rng": {
                "torch": torch.get_rng_state(),
                "shuffle": shuffle.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            },
            "seed": seed,
            "elements": list(model.elements),
            "model_hash": model_hash,
            "run_hash": run_hash,
            "early_stopping": {"bad_epochs": bad_epochs, "stopped": stopped},
        }

    start = epochs_done
    initial_val = set_loss(model, val_store, n_val, val_bs, device) if start == 0 and start < end else math.nan
    if math.isfinite(initial_val):
        print(f"validation loss before training: {initial_val}")
    epoch_seconds = []
    periodic = paths.resume if paths.resume is not None else paths.checkpoint
    params = list(model.parameters())
    M = len(train_cs)
    sizes = batch_sizes(M, bs)  # the global batches
    try:
        for epoch in range(start, end):
            t0 = time.perf_counter()
            model.train()
            order = torch.randperm(M, generator=shuffle).numpy() if tcfg["shuffle_flag"] else np.arange(M)
            # this rank's configurations of each global batch (each batch's whole, in one process)
            mine, my_sizes = distributed.shard_batches(order, sizes, ranks)
            batches = _batches_of_pass(train_store, mine, my_sizes)
            loss_sum = torch.zeros((), dtype=dtype, device=device)
            for n_batch, n_mine in zip(sizes.tolist(), my_sizes.tolist(), strict=True):
                optimizer.zero_grad(set_to_none=True)
                if n_mine:
                    grad, b = next(batches)
                    # this rank's share of the batch mean: the summed gradients are the mean's
                    loss = batch_loss_sum(model, b, grad) / n_batch
                    loss.backward()
                    loss_sum += loss.detach()
                distributed.all_reduce_gradients(params)
                optimizer.step()
            batches.close()
            train_loss = distributed.sum_across([loss_sum], device)[0] / len(sizes)
            if not math.isfinite(train_loss):
                raise PotflowInputError(
                    "config", f"config field 'pytorch.learning_rate': training diverged (loss {train_loss}) "
                    f"at epoch {epoch}; lower the learning rate"
                )
            val_loss = set_loss(model, val_store, n_val, val_bs, device)
            history.append([float(epoch), train_loss, val_loss])
            epochs_done = epoch + 1
            if has_val and val_loss < best_val:
                best_val, bad_epochs = val_loss, 0
                best = {
                    "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                    "epoch": epoch,
                    "val_loss": val_loss,
                    "train_loss": train_loss,
                }
            elif has_val:
                bad_epochs += 1
            if scheduler is not None:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(val_loss if has_val else train_loss)
                else:
                    scheduler.step()
            patience = tcfg["early_stopping_patience"]
            stopped = bool(patience and has_val and bad_epochs >= patience)
            if ranks.main and (epochs_done % save_freq == 0 or stopped or epochs_done == end):
                write_torch(periodic, record())
            seconds = time.perf_counter() - t0
            epoch_seconds.append(seconds)
            screen.lines(
                f"----- epoch: {epoch}",
                f"Batch averaged train/val loss: {train_loss} {val_loss}",
                f"Epoch time {seconds}",
            )
            screen.step(train_loss, val_loss)
            if stopped:
                screen.lines(f"early stopping: no validation improvement for {patience} epochs")
                break
    finally:
        screen.close()

    if epochs_done == start:
        # nothing was trained: evaluate the loaded model as it is
        train_eval = make_store(train_mine, shift, scale, option, dtype, device, share, stream)
        evaluated = (
            set_loss(model, train_eval, M, big_batch(train_eval, bs) if stream else None, device),
            set_loss(model, val_store, n_val, val_bs, device),
        )
        print(f"evaluation of {source} (no training): train/val loss: {evaluated[0]} {evaluated[1]}")
        if not history:
            history = [[float(max(epochs_done - 1, 0)), evaluated[0], evaluated[1]]]

    # the one selected model
    selection = tcfg["model_selection"]
    last_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    rows = {int(r[0]): r for r in history}
    info = {"epochs_trained": epochs_done, "source": source}
    if selection == "best" and best is not None:
        model.load_state_dict(best["state_dict"])
        info.update(selection="best", epoch=int(best["epoch"]))
    elif state is not None and state["format"] != CHECKPOINT_FORMAT and epochs_done == start:
        info.update(selection="loaded", epoch=int(history[-1][0]))  # a model file, evaluated as it is
    else:
        info.update(selection="last", epoch=int(history[-1][0]))
        if selection == "best" and not has_val:
            info["note"] = "no validation configurations: the last epoch is used"
    row = rows.get(info["epoch"], [info["epoch"], math.nan, math.nan])
    info.update(train_loss=float(row[1]), val_loss=float(row[2]))
    if ranks.main:
        save_model(paths.model, model, **info)
    model.load_state_dict(last_state)
    if ranks.main:
        write_torch(paths.checkpoint, record())
        write_loss_file(paths.loss, history)
        data.write_split(paths.split)
        if paths.resume is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(paths.resume)
    distributed.barrier()  # the files are complete when any rank returns
    print(f"model: {paths.model} ({info['selection']} epoch {info['epoch']}, validation loss {info['val_loss']})")
    return {
        "info": info, "history": history, "epochs_done": epochs_done, "streamed": bool(stream),
        "epoch_seconds": epoch_seconds, "initial_val_loss": initial_val, "last_state": last_state,
    }  # fmt: skip


def write_loss_file(path, history):
    """loss_vs_epochs.dat as FitSNAP writes it (np.savetxt: epoch, train loss, validation loss)."""
    arr = np.asarray(history, dtype=float).reshape(-1, 3)
    with atomic_path(path) as tmp:
        np.savetxt(tmp, arr)
