"""Everything a fit needs before its first epoch: device, data, model, optimiser and stores.

``setup_fit`` builds a ``Fit``: a new model (standardised on the training set, started from the
linear SNAP fit with ``linear_start``) or the state a fit resumes or restarts from, the
optimiser (``optimizer``: adam, or full-batch lbfgs) and schedule, and the stores that hold (or
stream) this process's share of the training and validation configurations.
"""

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from potflow.errors import PotflowInputError
from potflow.hashing import settings_hash
from potflow.models.files import model_from_record
from potflow.models.network import AtomicEnergyModel
from potflow.training import collectives
from potflow.training.checkpoints import (
    is_checkpoint,
    model_settings,
    restore_optimisation,
    run_settings,
    start_state,
)
from potflow.training.datasets import ConfigSet, FitData
from potflow.training.linear_start import start_from_linear_fit
from potflow.training.loss import big_batch
from potflow.training.selection import ModelSelection
from potflow.training.stores import make_store

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class StartState:
    """Where a fit starts: a checkpoint or model record (None: a new model)."""

    record: dict | None
    source: str  # "new", "resume state <path>" or the save_state_input path
    loaded_input: bool  # the record came from save_state_input
    epochs_done: int = 0

    @property
    def is_model_file(self):
        return self.record is not None and not is_checkpoint(self.record)


@dataclass
class TrainingStores:
    """This process's training and validation configurations, ready for the network."""

    train: Any  # MemoryStore or StreamStore
    val: Any  # None without validation configurations
    val_batch: int  # configurations per graph-free validation batch
    streamed: bool
    total_bytes: int  # prepared size of this process's share


@dataclass
class Fit:
    """One running fit: its settings, model, optimisation state, data stores and history."""

    cfg: dict
    ranks: collectives.Ranks
    device: torch.device
    dtype: torch.dtype
    data: FitData
    train_set: ConfigSet
    val_set: ConfigSet
    model: AtomicEnergyModel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    shuffle: torch.Generator
    seed: int
    model_hash: str
    run_hash: str
    start: StartState
    selection: ModelSelection
    epochs_done: int = 0
    history: list = field(default_factory=list)
    stores: "TrainingStores | None" = None
    last_state: dict | None = None  # the last epoch's weights, once the fit has ended
    linear_path_held: bool = False  # the network's linear path (linear_start) is held fixed

    @property
    def settings(self):
        return self.cfg["pytorch"]


def resolve_device(name, ranks=None):
    """The training device; with several processes, GPU LOCAL_RANK of those a process sees."""
    ranks = ranks or collectives.Ranks()
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


def make_optimizer(model, tcfg):
    """Adam (minibatches, ``learning_rate``) or L-BFGS (one full-batch step per epoch, strong
    Wolfe line search: no learning rate to choose)."""
    if tcfg["optimizer"] == "lbfgs":
        return torch.optim.LBFGS(
            model.parameters(), lr=1.0, max_iter=1, max_eval=25, history_size=tcfg["lbfgs_history"],
            line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0,
        )  # fmt: skip
    # the fused step is one kernel per step (much less Python overhead at small batches)
    return torch.optim.Adam(model.parameters(), lr=tcfg["learning_rate"], fused=True)


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


def _check_sizes(tcfg, ranks, train_set):
    bs = tcfg["batch_size"]
    if bs > len(train_set):
        raise PotflowInputError(
            "config", f"config field 'pytorch.batch_size': {bs} is larger than the training set ({len(train_set)} configurations)"
        )
    if ranks.world > len(train_set):
        raise PotflowInputError(
            "config", f"config field 'resources.train_gpus': {ranks.world} training processes but "
            f"{len(train_set)} training configurations"
        )


def setup_fit(cfg, folders, resume, stream=None):
    """A ``Fit`` ready for its next epoch. The order of the random draws is part of the result:
    seed, weight initialisation, then (on a resume) the saved random streams."""
    tcfg = cfg["pytorch"]
    ranks = collectives.ranks()
    if tcfg["threads"] > 0:
        torch.set_num_threads(tcfg["threads"])
    dtype = DTYPES[tcfg["dtype"]]
    device = resolve_device(tcfg["device"], ranks)
    data = FitData(cfg, folders)
    train_set, val_set = data.subset("train"), data.subset("val")
    _check_sizes(tcfg, ranks, train_set)
    for note in data.notes:
        print(note)

    seed = tcfg["seed"] if tcfg["manual_seed_flag"] else int.from_bytes(os.urandom(4), "little")
    seed = collectives.broadcast_int(seed, device)  # one shuffle for all ranks
    torch.manual_seed(seed)
    layers = tcfg["layer_sizes"]
    model = AtomicEnergyModel(
        data.num_desc, layers[1:-1], data.elements, tcfg["multi_element_option"], tcfg["activation"]
    ).to(dtype)
    model_hash = settings_hash(model_settings(cfg, model))
    run_hash = settings_hash(run_settings(cfg, [g.name for g in data.groups]))

    rec, source, loaded_input = start_state(cfg, model, resume, run_hash, clean=ranks.main)
    start = StartState(rec, source, loaded_input)
    has_val, patience = len(val_set) > 0, tcfg["early_stopping_patience"]
    selection = ModelSelection(has_val, patience)
    history = []
    if rec is None:
        if ranks.main:  # statistics of the whole training set; the other ranks receive them
            model.set_standardisation_moments(*train_set.moments())
            if tcfg["linear_start"]:
                print(start_from_linear_fit(model, train_set))
            else:
                model.set_energy_offsets(*train_set.energy_offsets())
    elif is_checkpoint(rec):
        model.load_state_dict(rec["model"]["state_dict"])
        start.epochs_done = int(rec["epochs_done"])
        history = [list(map(float, row)) for row in rec["history"]]
        selection = ModelSelection.from_checkpoint(rec, has_val, patience)
        seed = int(rec["seed"])
    else:  # a model file: weights and standardisation only
        model.load_state_dict(model_from_record(rec, source).state_dict())
        start.epochs_done = int(rec.get("info", {}).get("epochs_trained", 0))
    model.to(device=device, dtype=dtype)
    collectives.broadcast_module(model)  # rank 0's weights, shift and scale on every rank
    # a new fit started linear holds its linear path fixed, and so does any continuation of it
    if rec is None:
        held = bool(tcfg["linear_start"]) and model.supports_linear_start()
    else:
        held = is_checkpoint(rec) and bool(rec.get("linear_path_held", False))
    if held:
        model.hold_linear_path()

    optimizer = make_optimizer(model, tcfg)
    # L-BFGS's line search picks every step length: no learning rate to schedule
    scheduler = make_scheduler(optimizer, cfg) if tcfg["optimizer"] == "adam" else None
    if tcfg["optimizer"] == "lbfgs" and tcfg["scheduler"]["type"] != "none":
        print(f"config field 'pytorch.scheduler': {tcfg['scheduler']['type']} is not used with optimizer lbfgs")
    shuffle = torch.Generator().manual_seed(seed)
    if is_checkpoint(rec):
        # a restart with the other optimiser (save_state_input) starts it afresh
        same_kind = rec.get("optimizer_kind", "adam") == tcfg["optimizer"]
        if not same_kind:
            kind = rec.get("optimizer_kind", "adam")
            print(f"{source}: its optimiser state is {kind}'s; {tcfg['optimizer']} starts afresh")
        restore_optimisation(rec, optimizer if same_kind else None, scheduler, shuffle, device)
        if loaded_input and scheduler is None and tcfg["optimizer"] == "adam":
            for group in optimizer.param_groups:  # an explicit restart takes the config's rate
                group["lr"] = tcfg["learning_rate"]

    fit = Fit(
        cfg=cfg, ranks=ranks, device=device, dtype=dtype, data=data, train_set=train_set,
        val_set=val_set, model=model, optimizer=optimizer, scheduler=scheduler, shuffle=shuffle,
        seed=seed, model_hash=model_hash, run_hash=run_hash, start=start, selection=selection,
        epochs_done=start.epochs_done, history=history, linear_path_held=held,
    )  # fmt: skip
    fit.stores = make_stores(fit, stream)
    return fit


def make_stores(fit, stream=None):
    """This process's share of the training and validation sets, in memory or streamed.

    ``stream`` None: stream when the prepared data exceed ``memory_budget_mb``.
    """
    tcfg, ranks = fit.settings, fit.ranks
    shift = fit.model.shift.detach().cpu().double().numpy()
    scale = fit.model.scale.detach().cpu().double().numpy()
    budget = tcfg["memory_budget_mb"]
    budget = None if budget is None else int(budget * 2**20)
    # a rank holds (or streams) its own share of the configurations: all of them in one process
    train_mine = ConfigSet(fit.data, fit.train_set.ids[ranks.share(len(fit.train_set))])
    val_mine = ConfigSet(fit.data, fit.val_set.ids[ranks.share(len(fit.val_set))])
    total_bytes = train_mine.prepared_bytes(fit.dtype) + val_mine.prepared_bytes(fit.dtype)
    if stream is None:
        stream = budget is not None and total_bytes > budget
    share = None if budget is None else budget // 2
    layout = fit.model.layout
    train_store = make_store(train_mine, shift, scale, layout, fit.dtype, fit.device, share, stream)
    val_store = None
    if len(val_mine):
        val_store = make_store(val_mine, shift, scale, layout, fit.dtype, fit.device, share, stream)
    # no graph in validation: big batches, as many configurations as a streamed chunk holds
    val_bs = len(val_mine) if not stream else big_batch(val_store, tcfg["batch_size"])
    return TrainingStores(train_store, val_store, val_bs, bool(stream), total_bytes)

