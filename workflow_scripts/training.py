"""Training rules (train, train_member): fit the network, in one process or one per GPU, or
solve a linear fit (solver SVD or RIDGE) exactly."""

import json
from pathlib import Path

from potflow.config.load import is_linear
from potflow.errors import PotflowInputError
from potflow.training.gpus import GpuClaimError, claim_gpus
from potflow.workflow.rulescript import run_rule

sm = snakemake  # noqa: F821


def body():
    # claim the job's GPUs (CUDA_VISIBLE_DEVICES) before torch initialises CUDA
    gpus = int(sm.resources.get("gpu", 0))
    try:
        claim = claim_gpus(gpus, log=print)
    except GpuClaimError as exc:
        raise PotflowInputError("resources.gpu", str(exc)) from None
    from potflow.training.loop import TrainPaths, train

    with claim:
        out = sm.output
        paths = TrainPaths(
            model=Path(out.model),
            checkpoint=Path(out.checkpoint),
            loss=Path(out.loss),
            split=Path(out.split),
            resume=Path(sm.params.resume),
        )
        cfg = json.loads(sm.params.settings)  # the sections training depends on
        folders = list(sm.input.descriptors)
        if is_linear(cfg):  # no epochs: the exact least-squares solution
            from potflow.linear.fit import train_linear

            train_linear(cfg, folders, paths)
        elif gpus > 1:  # one process per GPU (torchrun); without GPUs they share the CPUs
            from potflow.training.launch import run_torchrun

            run_torchrun(gpus, cfg, folders, paths)
        else:
            train(cfg, folders, paths, progress=True)


run_rule(body, sm.log[0])
