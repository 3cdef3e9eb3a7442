"""``potflow gpu``: run a command on free GPUs of this machine.

It claims the GPUs (one lock file each, ``potflow.training.gpus``), sets CUDA_VISIBLE_DEVICES
and runs the command in its place, which holds them until it ends.
"""

import argparse
import os
import sys

from potflow.errors import PotflowInputError
from potflow.training.gpus import GpuClaimError, claim_gpus


def configure_parser(parser):
    parser.add_argument("-n", "--gpus", type=int, default=1, help="number of GPUs (default 1)")
    parser.add_argument("--timeout", type=float, default=None, help="give up after SECONDS")
    parser.add_argument(
        "program", nargs=argparse.REMAINDER, metavar="COMMAND", help="-- command and its arguments"
    )


def run_command(args):
    command = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not command:
        raise PotflowInputError("command line", "no command given (potflow gpu -n 1 -- COMMAND ...)")
    try:
        claim = claim_gpus(args.gpus, timeout=args.timeout, log=lambda m: print(m, file=sys.stderr))
    except GpuClaimError as exc:
        raise PotflowInputError("resources.gpu", str(exc)) from None
    # exec keeps the lock descriptors open in the command (and its children, e.g. torchrun's
    # workers): the GPUs stay claimed exactly as long as the command runs.
    for fd in claim._fds:
        os.set_inheritable(fd, True)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"potflow gpu: error: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
