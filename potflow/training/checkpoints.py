"""Checkpoints of a fit: what they hold, how they are read, and where a fit starts from.

A checkpoint is a dict of state dicts and plain values (never a pickled object); everything
loads with ``torch.load(weights_only=True)``. The run hash says which fit a resume state belongs
to: a rerun continues only a state of the same settings.
"""

from pathlib import Path

import torch

from potflow.descriptors.settings import descriptor_key
from potflow.errors import PotflowInputError
from potflow.fileio import clean_stale_temporaries
from potflow.hashing import settings_hash
from potflow.models.files import load_refusal, model_record

CHECKPOINT_FORMAT = "potflow-checkpoint"


# pytorch keys that do not change the course of a fit: a resume may differ in them
_NOT_IN_RUN = ("num_epochs", "save_state_output", "save_freq", "threads", "device", "model_selection", "memory_budget_mb")


def is_checkpoint(rec):
    """A checkpoint record (not a model file, not None)."""
    return rec is not None and rec["format"] == CHECKPOINT_FORMAT


def model_settings(cfg, model):
    """What a checkpoint must share with the config to be loaded at all."""
    return {"hyperparameters": model.hyperparameters(), "descriptor_key": descriptor_key(cfg)}


def run_settings(cfg, group_names):
    """What a resume state must share with the config to continue the same fit."""
    tcfg = {k: v for k, v in cfg["pytorch"].items() if k not in _NOT_IN_RUN}
    if tcfg.get("virial_weight") is None:  # unset: the run hash of fits from before the key
        tcfg.pop("virial_weight", None)
    if tcfg["scheduler"]["type"] == "cosine":
        tcfg["num_epochs"] = cfg["pytorch"]["num_epochs"]  # the schedule's length
    return {
        "pytorch": tcfg,
        "groups": cfg["groups"],
        "eshift": cfg["eshift"],
        "descriptor_key": descriptor_key(cfg),
        "group_names": list(group_names),
    }


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


def checkpoint_record(fit):
    """The whole state of a running fit (``potflow.training.setup.Fit``), for ``write_torch``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "model": model_record(fit.model),
        "best": fit.selection.best,
        "optimizer": fit.optimizer.state_dict(),
        "scheduler": fit.scheduler.state_dict() if fit.scheduler is not None else None,
        "epochs_done": fit.epochs_done,
        "history": fit.history,
        "rng": {
            "torch": torch.get_rng_state(),
            "shuffle": fit.shuffle.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if fit.device.type == "cuda" else [],
        },
        "seed": fit.seed,
        "elements": list(fit.model.elements),
        "model_hash": fit.model_hash,
        "run_hash": fit.run_hash,
        "early_stopping": fit.selection.early_stopping_state(),
        "linear_path_held": fit.linear_path_held,
        "optimizer_kind": fit.settings["optimizer"],
    }


def restore_optimisation(rec, optimizer, scheduler, shuffle, device):
    """Optimiser (unless None), schedule and random streams continue where the checkpoint
    ``rec`` stopped."""
    if optimizer is not None:
        optimizer.load_state_dict(rec["optimizer"])
    if scheduler is not None and rec.get("scheduler") is not None:
        scheduler.load_state_dict(rec["scheduler"])
    shuffle.set_state(rec["rng"]["shuffle"])
    torch.set_rng_state(rec["rng"]["torch"])
    if device.type == "cuda" and rec["rng"].get("cuda"):
        torch.cuda.set_rng_state_all(rec["rng"]["cuda"])
