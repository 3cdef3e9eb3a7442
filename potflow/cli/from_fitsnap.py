"""``potflow from-fitsnap``: convert a FitSNAP input file to a potflow YAML config."""

import sys
from pathlib import Path

from potflow.config.fitsnap import _stderr, read_fitsnap_input, to_yaml
from potflow.errors import PotflowInputError
from potflow.fileio import write_text


def configure_parser(parser):
    parser.description = (
        "Convert a FitSNAP input script to a potflow YAML config. Keys potflow ignores or does "
        "not support are listed on stderr and as comments in the output."
    )
    parser.add_argument("input", help="FitSNAP input file")
    parser.add_argument("-o", "--output", help="YAML file to write (default: standard output)")
    parser.add_argument(
        "--strict", action="store_true", help="fail on keys potflow does not support"
    )
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")


def run_command(args):
    conv = read_fitsnap_input(args.input, strict=args.strict)
    text = to_yaml(conv)
    if args.output is None:
        sys.stdout.write(text)
    else:
        out = Path(args.output)
        if out.resolve() == Path(args.input).resolve():
            raise PotflowInputError(out, "is the input file")
        if out.exists() and not args.force:
            raise PotflowInputError(out, "exists; use --force to overwrite it")
        try:
            write_text(out, text)
        except OSError as exc:
            raise PotflowInputError(out, f"cannot write: {exc.strerror}") from None
    for notice in conv.notices:
        _stderr(f"potflow: {args.input}: {notice}")
    if args.output is not None:
        _stderr(f"potflow: wrote {args.output}")
    return 0
