from pathlib import Path

from potflow.rulescript import run_rule
from potflow.train import TrainPaths, train

sm = snakemake  # noqa: F821


def body():
    out = sm.output
    paths = TrainPaths(
        model=Path(out.model),
        checkpoint=Path(out.checkpoint),
        loss=Path(out.loss),
        split=Path(out.split),
        resume=Path(sm.params.resume),
    )
    train(sm.params.config, list(sm.input.descriptors), paths, progress=True)


run_rule(body, sm.log[0])
