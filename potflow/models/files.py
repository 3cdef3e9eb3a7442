"""Model files (model.pt): a record of state dicts and plain values, never a pickled object."""

import torch

from potflow.errors import PotflowInputError
from potflow.fileio import write_torch
from potflow.models.network import AtomicEnergyModel

MODEL_FORMAT = "potflow-model"


def model_record(model, **info):
    """Plain tensors and builtins only, so ``torch.load(weights_only=True)`` reads it back."""
    return {
        "format": MODEL_FORMAT,
        "version": 1,
        "hyperparameters": model.hyperparameters(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "info": info,
    }


def save_model(path, model, **info):
    """Write a model file atomically; ``info`` says which model it is (epoch, selection...)."""
    write_torch(path, model_record(model, **info))


def model_from_record(record, where="model"):
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise PotflowInputError(where, "not a potflow model file")
    hp = record["hyperparameters"]
    model = AtomicEnergyModel(hp["num_desc"], hp["hidden"], hp["elements"], hp["option"], hp["activation"])
    state = record["state_dict"]
    model.to(next(iter(state.values())).dtype)
    model.load_state_dict(state)
    return model


def load_refusal(exc):
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words: the blocked global
    or instruction, never torch's advice to retry with ``weights_only=False``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        skip = ("Check the documentation", "Please file an issue", "Weights only load failed")
        telling = [line for line in lines if not line.startswith(skip)]
        detail = f" ({telling[0][:150]})" if telling else ""
        return f"it holds pickled objects, not plain tensors{detail}"
    return (lines[0].split(". ")[0] if lines else type(exc).__name__)[:200]  # its first sentence


def load_model(path, map_location="cpu"):
    """(model, info) from a file written by ``save_model``; never unpickles arbitrary objects."""
    try:
        record = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise PotflowInputError(path, "model file does not exist") from None
    except Exception as exc:
        raise PotflowInputError(path, f"not a readable potflow model file (refused: {load_refusal(exc)})") from None
    return model_from_record(record, path), record.get("info", {})
