"""``potflow train``: fit the network outside Snakemake, or as one of torchrun's processes.

Under torchrun each process runs this command; they join one process group
(``potflow.training.collectives``) and train data-parallel.
"""

from potflow.config.load import is_linear
from potflow.errors import PotflowInputError
from potflow.training.collectives import finish, init_from_env
from potflow.training.launch import job_from_config, read_job
from potflow.training.loop import train


def configure_parser(parser):
    parser.description = (
        "Fit the network (or, with solver SVD or RIDGE, the linear SNAP) on computed descriptors. Run it under torchrun to train in several "
        "processes (one per GPU, on one or more nodes): "
        "torchrun --nproc-per-node 4 -m potflow.cli train --config config.yaml"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="potflow config (YAML); outputs under RESULTS/fits/FIT")
    source.add_argument("--job", help="job file written by the training rule")
    parser.add_argument("--results", default="results", help="results folder (default: results)")
    parser.add_argument("--fit", default="default", help="fit name (default: default)")


def run_command(args):
    if args.job:
        cfg, folders, paths = read_job(args.job)
    else:
        cfg, folders, paths = job_from_config(args.config, args.results, args.fit)
    if is_linear(cfg):  # solver SVD or RIDGE: one exact solve, in this process
        from potflow.linear.fit import train_linear

        train_linear(cfg, folders, paths)
        return 0
    me = init_from_env(cfg["pytorch"]["device"])
    ok = False
    try:
        train(cfg, folders, paths, progress=me.main)
        ok = True
    except PotflowInputError:
        if me.main:
            raise
        return 1  # every rank meets the same error: rank 0 reports it
    finally:
        finish(ok)
    return 0
