"""The ``potflow`` command: one sub-command per module of this package.

A command module defines ``configure_parser(parser)`` (its arguments) and
``run_command(args) -> int``; list it in ``COMMAND_MODULES`` with a one-line help. Modules are
imported only when their command runs, so ``potflow --help`` stays fast. A command reports bad
input by raising ``PotflowInputError``: one line on stderr, exit status 1.
"""

import argparse
import importlib
import sys

from potflow.errors import PotflowInputError

# command name -> module; the help line is repeated here so --help needs no imports.
COMMAND_MODULES = {
    "from-fitsnap": ("potflow.cli.from_fitsnap", "convert a FitSNAP input file to a potflow config"),
    "train": ("potflow.cli.train", "fit the network (under torchrun: on several GPUs or nodes)"),
    "example": ("potflow.cli.example", "write the bundled Ta example data (Ta06A labels)"),
    "gpu": ("potflow.cli.gpu", "run a command on free GPUs (sets CUDA_VISIBLE_DEVICES)"),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="potflow",
        description="potflow: neural-network interatomic potentials on LAMMPS descriptors. "
        "The workflow itself runs with `snakemake`; these are helper commands.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_line) in COMMAND_MODULES.items():
        subparsers.add_parser(name, help=help_line, description=help_line)
    return parser, subparsers


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, subparsers = build_parser()
    # Let the chosen command add its own arguments before the full parse.
    name = next((a for a in argv if not a.startswith("-")), None)
    if name in COMMAND_MODULES:
        module = importlib.import_module(COMMAND_MODULES[name][0])
        module.configure_parser(subparsers.choices[name])
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMAND_MODULES[args.command][0])
    try:
        return module.run_command(args)
    except PotflowInputError as exc:
        # Bad input: one line, non-zero exit, nothing written.
        print(f"potflow {args.command}: error: {exc}", file=sys.stderr)
        return 1
