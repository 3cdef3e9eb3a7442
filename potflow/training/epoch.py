"""One epoch of a fit: shuffled global batches, summed gradients, one optimiser step each.

Under torchrun each rank takes its share of every global batch; its loss is divided by the
whole batch's size, so the gradients summed across ranks are those of the batch mean.

With ``optimizer: lbfgs`` an epoch is one L-BFGS iteration on the whole training set: each
evaluation of the loss (the line search may ask for several) is one pass over all training
configurations, in memory or streamed, with the gradients summed over batches and ranks.
"""

import math

import numpy as np
import torch

from potflow.errors import PotflowInputError
from potflow.training import collectives
from potflow.training.datasets import batch_sizes
from potflow.training.loss import (
    add_weight_penalty_gradient,
    batch_loss_backward,
    big_batch,
    set_loss,
)


def epoch_order(fit):
    """The order of the training configurations in the next epoch."""
    M = len(fit.train_set)
    if fit.settings["shuffle_flag"]:
        return torch.randperm(M, generator=fit.shuffle).numpy()
    return np.arange(M)


def _batches_of_pass(store, order, sizes):
    """(gradient rows, batch) of one pass in ``order``, one batch at a time; sizes 0 (a rank
    without configurations in a global batch) give no batch."""
    for prepared, batches in store.epoch(order, sizes[sizes > 0]):
        for b in batches:
            yield prepared.grad, b


def validation_loss(fit):
    return set_loss(fit.model, fit.stores.val, len(fit.val_set), fit.stores.val_batch, fit.device)


def add_weight_penalty(fit):
    """Add the weight-decay term's gradient (after the ranks' gradients are summed, so each rank
    adds the same once); its value, 0.0 without weight decay."""
    decay = fit.settings["weight_decay"]
    return add_weight_penalty_gradient(fit.model, decay) if decay else 0.0


def train_one_epoch(fit, epoch):
    """Train one pass over the training set; return its batch-averaged training loss."""
    model, device = fit.model, fit.device
    model.train()
    sizes = batch_sizes(len(fit.train_set), fit.settings["batch_size"])  # the global batches
    # this rank's configurations of each global batch (each batch's whole, in one process)
    mine, my_sizes = collectives.shard_batches(epoch_order(fit), sizes, fit.ranks)
    batches = _batches_of_pass(fit.stores.train, mine, my_sizes)
    params = list(model.parameters())
    loss_sum = torch.zeros((), dtype=fit.dtype, device=device)
    for n_batch, n_mine in zip(sizes.tolist(), my_sizes.tolist(), strict=True):
        for p in params:  # Optimizer.zero_grad(set_to_none=True) without its per-call overhead
            p.grad = None
        if n_mine:
            grad, b = next(batches)
            # this rank's share of the batch mean: the summed gradients are the mean's
            loss_sum += batch_loss_backward(model, b, grad, 1.0 / n_batch)
        collectives.all_reduce_gradients(params)
        add_weight_penalty(fit)
        fit.optimizer.step()
    batches.close()
    train_loss = collectives.sum_across([loss_sum], device)[0] / len(sizes)
    if not math.isfinite(train_loss):
        raise PotflowInputError(
            "config", f"config field 'pytorch.learning_rate': training diverged (loss {train_loss}) "
            f"at epoch {epoch}; lower the learning rate"
        )
    return train_loss


def full_batch_loss(fit):
    """L over the whole training set with its gradient (all ranks' shares summed), as a tensor."""
    model, store = fit.model, fit.stores.train
    model.train()
    fit.optimizer.zero_grad()
    n_total = len(fit.train_set)
    total = torch.zeros((), dtype=fit.dtype, device=fit.device)
    if len(store):
        # a memory store: the whole share in one batch; a streamed one: chunk-sized batches
        batch = big_batch(store, fit.settings["batch_size"]) if store.streaming else len(store)
        for prepared, batches in store.epoch(np.arange(len(store)), batch):
            for b in batches:
                total += batch_loss_backward(model, b, prepared.grad, 1.0 / n_total)
    collectives.all_reduce_gradients(list(model.parameters()))
    # the line search compares these values: keep them in the fit's dtype (float64 fits too)
    return torch.tensor(collectives.sum_across([total], fit.device)[0] + add_weight_penalty(fit), dtype=fit.dtype)


def train_lbfgs_epoch(fit, epoch):
    """One L-BFGS iteration (strong Wolfe line search) on the full training set; its loss."""
    loss = float(fit.optimizer.step(lambda: full_batch_loss(fit)))
    if not math.isfinite(loss):
        raise PotflowInputError(
            "config", f"config field 'pytorch.optimizer': lbfgs diverged (loss {loss}) at epoch {epoch}; "
            "use adam with a small learning_rate"
        )
    return loss


def run_epoch(fit, epoch):
    """One epoch: training pass, validation loss, model selection, schedule step."""
    train_loss = train_lbfgs_epoch(fit, epoch) if fit.settings["optimizer"] == "lbfgs" else train_one_epoch(fit, epoch)
    val_loss = validation_loss(fit)
    fit.history.append([float(epoch), train_loss, val_loss])
    fit.epochs_done = epoch + 1
    fit.selection.observe(fit.model, epoch, train_loss, val_loss)
    if fit.scheduler is not None:
        if isinstance(fit.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            fit.scheduler.step(val_loss if fit.selection.has_validation else train_loss)
        else:
            fit.scheduler.step()
    return train_loss, val_loss
