"""``potflow example``: write the bundled Ta example data again (Ta06A labels, fixed seed)."""

from potflow.data.example import SEED, generate_example


def configure_parser(parser):
    parser.add_argument("outdir", help="folder for the .xyz files (e.g. data/Ta_example)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")


def run_command(args):
    counts = generate_example(args.outdir, args.seed)
    print(f"wrote {sum(counts.values())} configurations in {len(counts)} groups to {args.outdir}")
    return 0
