"""The train/validation/test split of a fit, and its file split.tsv.

Split, per group, with FitSNAP's [GROUPS] semantics: the group's configurations (shuffled with
``groups.random_seed`` when ``random_sampling`` is 1) give the first n_train to training and the
next n_test to testing. A size <= 1 is a fraction, count = max(1, round(f * n)) (0 stays 0);
a size > 1 is a count. Validation configurations, which pick the best epoch and are never
reported as test, are drawn (seeded) from each group's training configurations:
round(validation_fraction * n_train), always leaving one to train on.
"""

import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from potflow.errors import PotflowInputError

SETS = ("train", "val", "test")


def size_count(size, n, where, field):
    """FitSNAP's size rule: a fraction (<= 1) or a count (> 1) of n configurations."""
    if size == 0:
        return 0
    if size <= 1:
        return max(1, math.floor(size * n + 0.5))
    if size != int(size):
        raise PotflowInputError(where, f"{field} {size} is a count (> 1) but not a whole number")
    return int(size)


def _group_rng(seed, group, stream):
    # Seeded by the group's name, so adding or removing a group leaves the others' splits alone.
    return np.random.default_rng([int(seed), zlib.crc32(group.encode()), stream])


def split_group(n, group, opts, validation_fraction, random_sampling, random_seed):
    """(labels, note): the set ("train", "val", "test", "" unused) of each of a group's n
    configurations, and a note when the test set had to shrink (else None)."""
    where = f"config groups.{group}"
    tr_size, te_size = opts["training_size"], opts["testing_size"]
    n_train = size_count(tr_size, n, where, "training_size")
    n_test = size_count(te_size, n, where, "testing_size")
    if n_train > n:
        raise PotflowInputError(where, f"training_size {tr_size} asks for {n_train} configurations but the group has {n}")
    note = None
    if n_train + n_test > n:
        # FitSNAP does the same (with a warning): the test set takes what is left
        note = f"group {group}: {n_train} train + {n_test} test > {n} configurations; testing on {n - n_train}"
        n_test = n - n_train
    if n_train == 0:
        raise PotflowInputError(
            where,
            f"the split leaves no configurations to train on (training_size {tr_size}, {n} configs); "
            "score test-only data with test_sets: or leave the group out with groups.exclude",
        )
    order = _group_rng(random_seed, group, 0).permutation(n) if random_sampling else np.arange(n)
    labels = np.full(n, "", dtype=object)
    train = order[:n_train]
    labels[train] = "train"
    labels[order[n_train : n_train + n_test]] = "test"
    n_val = min(math.floor(validation_fraction * n_train + 0.5), n_train - 1)
    if n_val > 0:
        labels[_group_rng(random_seed, group, 1).choice(train, n_val, replace=False)] = "val"
    return labels, note


SPLIT_COLUMNS = ["group", "index", "file", "natoms", "set"]


SPLIT_SETS = ("train", "val", "test")


def read_split(path):
    """split.tsv of a fit (``group index file natoms set``), checked."""
    path = Path(path)
    try:
        split = pd.read_csv(path, sep="\t", dtype={"group": str, "file": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PotflowInputError(path, f"cannot read split table: {str(exc).splitlines()[0]}") from None
    if list(split.columns) != SPLIT_COLUMNS:
        raise PotflowInputError(path, f"header must be '{' '.join(SPLIT_COLUMNS)}' (tab-separated), not {list(split.columns)}")
    bad = sorted(set(split["set"]) - set(SPLIT_SETS))
    if bad:
        raise PotflowInputError(path, f"column 'set' has {bad}; allowed: {', '.join(SPLIT_SETS)}")
    for col in ("index", "natoms"):
        if not pd.api.types.is_integer_dtype(split[col]):
            raise PotflowInputError(path, f"column '{col}' must hold integers")
    dup = split.duplicated(["group", "index"])
    if dup.any():
        row = split[dup].iloc[0]
        raise PotflowInputError(path, f"configuration {row['index']} of group {row['group']} is listed twice")
    split.attrs["path"] = str(path)
    return split
