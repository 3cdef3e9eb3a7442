"""Model selection and early stopping: which epoch's weights become ``model.pt``.

``model_selection: best`` keeps the weights of the epoch with the lowest validation loss;
``last`` (or a fit without validation configurations) keeps the last epoch's.
``early_stopping_patience`` stops a fit after that many epochs without a better validation loss.
"""

import math


class ModelSelection:
    """The best validation epoch so far, and the count of epochs since it improved."""

    def __init__(self, has_validation, patience, best=None, bad_epochs=0, stopped=False):
        self.has_validation = has_validation
        self.patience = patience
        self.best = best
        self.bad_epochs = int(bad_epochs)
        self.stopped = bool(stopped)

    @classmethod
    def from_checkpoint(cls, rec, has_validation, patience):
        early = rec["early_stopping"]
        return cls(has_validation, patience, rec["best"], early["bad_epochs"], early["stopped"])

    @property
    def best_val_loss(self):
        return self.best["val_loss"] if self.best else math.inf

    def observe(self, model, epoch, train_loss, val_loss):
        """Record one finished epoch: keep its weights if they are the best so far."""
        if self.has_validation and val_loss < self.best_val_loss:
            self.bad_epochs = 0
            self.best = {
                "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "epoch": epoch,
                "val_loss": val_loss,
                "train_loss": train_loss,
            }
        elif self.has_validation:
            self.bad_epochs += 1
        self.stopped = bool(self.patience and self.has_validation and self.bad_epochs >= self.patience)

    def early_stopping_state(self):
        return {"bad_epochs": self.bad_epochs, "stopped": self.stopped}


def select_model(model, setting, selection, history, start, trained_to):
    """Load the selected weights into ``model``; return the info that ``model.pt`` carries.

    ``start`` is the fit's start (``StartState``), ``trained_to`` the epochs done at the end.
    """
    info = {"epochs_trained": trained_to, "source": start.source}
    if setting == "best" and selection.best is not None:
        model.load_state_dict(selection.best["state_dict"])
        info.update(selection="best", epoch=int(selection.best["epoch"]))
    elif start.is_model_file and trained_to == start.epochs_done:
        info.update(selection="loaded", epoch=int(history[-1][0]))  # a model file, evaluated as it is
    else:
        info.update(selection="last", epoch=int(history[-1][0]))
        if setting == "best" and not selection.has_validation:
            info["note"] = "no validation configurations: the last epoch is used"
    rows = {int(r[0]): r for r in history}
    row = rows.get(info["epoch"], [info["epoch"], math.nan, math.nan])
    info.update(train_loss=float(row[1]), val_loss=float(row[2]))
    return info
