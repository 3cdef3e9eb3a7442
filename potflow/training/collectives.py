"""Collectives of data-parallel training in several processes (GPUs, nodes), started by torchrun.

torchrun starts one process per GPU and tells each its place in the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); ``init_from_env`` joins them
in a torch.distributed process group: NCCL between GPUs, Gloo on CPUs. Without torchrun (or
with one process) nothing here does anything and training runs as before.

How a fit is shared between R ranks:

- the training and validation configurations are dealt out once, position p in the set to
  rank p mod R; a rank reads and prepares only its own from the memory-mapped descriptor
  files (in memory, or streamed batch by batch);
- every rank draws the same shuffled order (one seed, broadcast from rank 0), so the global
  batches are exactly those of one process; each rank takes its own configurations of each
  global batch, which may be none;
- a rank's loss is its share of the batch mean (its configurations' loss sum divided by the
  number of configurations in the global batch), and the ranks' gradients are summed after
  each backward pass: the sum is the gradient of one process, however unevenly a batch splits;
- the standardisation (shift, scale) and the starting weights are rank 0's, broadcast to all;
- losses are summed over the ranks; rank 0 alone writes files.

The gradients are summed by one ``all_reduce`` of a flat buffer per step rather than by
``DistributedDataParallel``: DDP would hand a parameter that no rank used in a batch (the
network of an element absent from the batch, ``multi_element_option: 2``) a zero gradient,
which moves it through Adam's momentum, where one process leaves it alone; and it needs
every rank to run a forward pass, while a rank may have no configuration in a batch. The
networks are small (a few thousand parameters), so one buffer is also what DDP would send.
"""

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from potflow.errors import PotflowInputError


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self):
        """Rank 0: the one that prints and writes files."""
        return self.rank == 0

    def share(self, n):
        """Positions (into a set of n configurations) dealt to this rank."""
        return np.arange(self.rank, n, self.world)


def ranks():
    """The process group's ranks, or a single process when there is none."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Ranks()


def wants_cuda(device):
    """Whether a ``pytorch.device`` setting trains on CUDA."""
    return str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def init_from_env(device="auto", environ=None):
    """Join the process group torchrun describes in the environment; returns ``Ranks``.

    NCCL when training on CUDA (each process on GPU ``LOCAL_RANK`` of those it sees), Gloo on
    CPUs. One process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) starts no group.
    """
    environ = os.environ if environ is None else environ
    if int(environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return ranks()
    cuda = wants_cuda(device)
    if cuda:
        local, count = int(environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local >= count:

            raise PotflowInputError(
                "torchrun", f"process {local} of this node has no GPU: the node shows {count} "
                "(CUDA_VISIBLE_DEVICES); start at most that many processes per node"
            )
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    return ranks()


def finish(ok=True):
    """Leave the process group; after a last barrier when all went well (no rank quits early)."""
    if dist.is_available() and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def barrier():
    if ranks().world > 1:
        dist.barrier()


def broadcast_int(value, device):
    """Rank 0's value of an integer (e.g. a seed drawn from os.urandom) on every rank."""
    if ranks().world == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.broadcast(t, 0)
    return int(t.item())


@torch.no_grad()
def broadcast_module(module):
    """Rank 0's parameters and buffers (weights, shift, scale) on every rank."""
    if ranks().world == 1:
        return
    for t in module.state_dict().values():
        dist.broadcast(t, 0)


def sum_across(values, device, dtype=torch.float64):
    """Sums over the ranks of a few numbers (floats or 0-d tensors), as Python floats.

    The sums are broadcast from rank 0 after the reduction, so that every rank takes the same
    decisions from them (best epoch, early stopping, learning-rate schedule) bit for bit.
    """
    t = torch.stack([torch.as_tensor(v, dtype=dtype, device=device).reshape(()) for v in values])
    if ranks().world > 1:
        dist.all_reduce(t)
        dist.broadcast(t, 0)
    return t.tolist()


@torch.no_grad()
def all_reduce_gradients(params):
    """Sum each parameter's gradient over the ranks, in one all_reduce.

    A parameter that no rank gave a gradient keeps none (the optimiser then skips it, as
    in one process); one that some rank used gets the sum, zeros standing in for the others.
    """
    if ranks().world == 1:
        return
    params = list(params)
    ref = params[0]
    parts = [p.grad.reshape(-1) if p.grad is not None else ref.new_zeros(p.numel()) for p in params]
    used = torch.tensor([p.grad is not None for p in params], dtype=ref.dtype, device=ref.device)
    flat = torch.cat([*parts, used])
    dist.all_reduce(flat)
    used = flat[-len(params) :].tolist()
    offset = 0
    for p, u in zip(params, used, strict=True):
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone() if u else None
        offset += n


def shard_batches(order, batch_sizes, ranks):
    """This rank's part of one epoch's global batches.

    ``order`` is the epoch's order of the whole set (positions, identical on every rank) and
    ``batch_sizes`` the global batches' sizes. Returns (the rank's configurations in batch
    order, as positions in its own share; how many of them each global batch has, 0 allowed).
    """
    order = np.asarray(order, dtype=np.int64)
    sizes = np.asarray(batch_sizes, dtype=np.int64)
    if ranks.world == 1:
        return order, sizes
    batch_of = np.repeat(np.arange(len(sizes)), sizes)
    mine = order % ranks.world == ranks.rank
    return order[mine] // ranks.world, np.bincount(batch_of[mine], minlength=len(sizes))
