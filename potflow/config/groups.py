"""The data groups of a config: discovery in the data folder, and each group's sizes and weights."""

import hashlib
import os
from pathlib import Path

from potflow.errors import PotflowInputError

_GROUP_OPTIONS = ("random_sampling", "random_seed", "smartweights", "group_sections", "group_types", "defaults", "exclude")


GROUP_DEFAULTS = {"training_size": 0.7, "testing_size": 0.3, "eweight": 1.0, "fweight": 1.0, "vweight": 0.0}


def named_groups(cfg):
    """Per-group entries of the `groups:` section (not its options)."""
    return {k: v for k, v in cfg["groups"].items() if k not in _GROUP_OPTIONS}


def group_options(cfg, group):
    """training/testing size and weights of one group, with [PYTORCH]'s global overrides."""
    opts = dict(GROUP_DEFAULTS)
    opts.update(cfg["groups"]["defaults"])
    opts.update(named_groups(cfg).get(group, {}))
    torch_cfg = cfg["pytorch"]
    if torch_cfg["energy_weight"] is not None:
        opts["eweight"] = torch_cfg["energy_weight"]
    if torch_cfg["force_weight"] is not None:
        opts["fweight"] = torch_cfg["force_weight"]
    if torch_cfg.get("virial_weight") is not None:
        opts["vweight"] = torch_cfg["virial_weight"]
    if torch_cfg["training_fraction"] is not None:
        opts["training_size"] = torch_cfg["training_fraction"]
        opts["testing_size"] = 1.0 - torch_cfg["training_fraction"]
    return opts


def data_source(cfg, basedir="."):
    """(directory, scraper) of the training data, resolved against ``basedir``."""
    return Path(basedir) / cfg["path"]["dataPath"], cfg["scraper"]["scraper"]


XYZ_SUFFIXES = (".xyz", ".extxyz")


def discover_groups(data_dir, scraper):
    """Group names in a data directory: sub-folders (JSON) or files (XYZ)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise PotflowInputError(data_dir, "data directory (path.dataPath) does not exist")
    if scraper == "JSON":
        groups = [p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    else:
        groups = [p.stem for p in data_dir.iterdir() if p.suffix in XYZ_SUFFIXES]
    if not groups:
        raise PotflowInputError(data_dir, f"no {scraper} groups found (path.dataPath)")
    return sorted(groups)


def group_source(data_dir, scraper, group):
    data_dir = Path(data_dir)
    if scraper == "JSON":
        return data_dir / group
    for suffix in XYZ_SUFFIXES:
        if (data_dir / f"{group}{suffix}").exists():
            return data_dir / f"{group}{suffix}"
    return data_dir / f"{group}.xyz"


def group_files_stamp(source):
    """The names, sizes and modification times (ns) of a JSON group's files, as one string.

    The import job of a JSON group takes the folder as its input and this stamp as a parameter:
    editing, adding or removing one file changes the stamp, so Snakemake reruns that group's
    job (its params trigger), while it checks one input path per group instead of every file
    (it stats each input of each ready job at every scheduling round: with one path per file,
    the W-Be set's 25,422 files cost its main process more CPU than the import jobs themselves).
    """
    entries = []
    with os.scandir(source) as it:
        for entry in it:
            if entry.name.endswith(".json") and entry.is_file():
                st = entry.stat()
                entries.append(f"{entry.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def group_size_mb(source):
    """Size of a group's raw files in MB (a JSON folder's files summed)."""
    source = Path(source)
    if source.is_dir():
        with os.scandir(source) as it:
            return sum(e.stat().st_size for e in it if e.name.endswith(".json") and e.is_file()) / 2**20
    return source.stat().st_size / 2**20 if source.exists() else 0.0


def fit_groups(cfg, basedir="."):
    """The training groups: discovered from the data directory, less `groups.exclude`."""
    data_dir, scraper = data_source(cfg, basedir)
    found = discover_groups(data_dir, scraper)
    listed = set(named_groups(cfg))
    missing = sorted(listed - set(found))
    if missing:
        raise PotflowInputError(
            data_dir, f"config field 'groups' names groups with no data: {', '.join(missing)}"
        )
    return [g for g in found if g not in cfg["groups"]["exclude"]]
