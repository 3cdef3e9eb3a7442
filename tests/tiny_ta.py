"""A tiny Ta dataset and config for workflow tests that run Snakemake end to end."""

import shutil

import yaml

# group -> number of FitSNAP JSON files copied from the reference data (a few seconds to run)
TINY_GROUPS = {"Displaced_BCC": 2, "Liquid": 1, "Volume_FCC": 3}
ZBL = {"pair_style": "hybrid/overlay zero 10.0 zbl 4.0 4.8", "pair_coeff": ["* * zero", "* * zbl 73 73"]}


def tiny_config(data_path="data"):
    return {
        "bispectrum": {"type": ["Ta"], "twojmax": 6},
        "scraper": {"scraper": "JSON"},
        "path": {"dataPath": str(data_path)},
        "reference": dict(ZBL),
        # a short fit (4 training configurations): the workflow tests check the pipeline, not the fit
        "pytorch": {"layer_sizes": ["num_desc", 16, 1], "num_epochs": 2, "batch_size": 2},
        "md": {"npt_steps": 100},  # the NPT run is exercised, briefly
    }


def copy_tiny_groups(shared_data, dest, groups=None):
    """Copy the first few JSON files of each group into dest/<group>/; returns {group: count}."""
    groups = TINY_GROUPS if groups is None else groups
    for group, count in groups.items():
        files = sorted((shared_data / "Ta_JSON" / group).glob("*.json"))[:count]
        assert len(files) == count, f"reference data {group} has fewer than {count} files"
        (dest / group).mkdir(parents=True)
        for f in files:
            shutil.copy(f, dest / group / f.name)
    return dict(groups)


def write_config(path, cfg):
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
