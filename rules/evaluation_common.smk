# Paths, groups and targets of the evaluation stage (its steps are in evaluation.smk).
# An "evaluation folder" is results/fits/{fit} (the fit's own groups, split.tsv labels) or
# results/fits/{fit}/test_sets/{test_set} (data that played no part in the fit; all Test).
import re

from potflow.errors import PotflowInputError
from potflow.evaluation.plots import FIGURES

# One metrics file name for every fit (FitSNAP's outfile.metrics).
METRICS = POTFLOW["outfile"]["metrics"]
if any(cfg["outfile"]["metrics"] != METRICS for cfg in FITS.values()):
    raise PotflowInputError(
        "config", "field 'outfile.metrics' must be the same for every fit"
    )
TEST_SETS = {
    name: (Path(ts["dataPath"]), ts.get("scraper", SCRAPER))
    for name, ts in POTFLOW["test_sets"].items()
}
for _name, (_dir, _) in TEST_SETS.items():
    if _dir.resolve() == DATA_DIR.resolve():
        raise PotflowInputError(
            "config",
            f"field 'test_sets.{_name}.dataPath' is the training data (path.dataPath)",
        )
TEST_GROUPS = {name: pfgroups.discover_groups(*src) for name, src in TEST_SETS.items()}
_EVALDIR = re.compile(rf"{re.escape(RESULTS)}/fits/([^/]+)(?:/test_sets/([^/]+))?")


def test_set_dir(fit, test_set):
    return f"{fit_dir(fit)}/test_sets/{test_set}"


def test_set_data(test_set, group):
    return f"{RESULTS}/test_sets/{test_set}/data/{group}.npz"


def test_set_descriptor_dir(test_set, group, key):
    return f"{RESULTS}/test_sets/{test_set}/descriptors/{key}/{group}"


def test_set_input_files(wildcards):
    data_dir, scraper = TEST_SETS[wildcards.test_set]
    source = pfgroups.group_source(data_dir, scraper, wildcards.group)
    if scraper == "JSON":
        return sorted(str(p) for p in source.glob("*.json"))
    return [str(source)]


def test_set_descriptor_dirs(wildcards):
    key = descriptor_key(FITS[wildcards.fit])
    return [
        test_set_descriptor_dir(wildcards.test_set, g, key)
        for g in TEST_GROUPS[wildcards.test_set]
    ]


def evaluation_sources(wildcards):
    """Descriptor folders and imported structures behind an evaluation folder."""
    fit, test_set = _EVALDIR.fullmatch(wildcards.evaldir).groups()
    key = descriptor_key(FITS[fit])
    if test_set is None:
        return {
            "descriptors": [descriptor_dir(g, key) for g in GROUPS],
            "structures": [imported(g) for g in GROUPS],
        }
    return {
        "descriptors": [
            test_set_descriptor_dir(test_set, g, key) for g in TEST_GROUPS[test_set]
        ],
        "structures": [test_set_data(test_set, g) for g in TEST_GROUPS[test_set]],
    }


def evaluation_title(wildcards):
    fit, test_set = _EVALDIR.fullmatch(wildcards.evaldir).groups()
    return f"fit {fit}" + (f", test set {test_set}" if test_set else "")


def evaluation_targets(evaldir, cfg):
    extras = cfg["extras"]
    targets = [f"{evaldir}/{METRICS}", f"{evaldir}/metrics.html"]
    targets += [
        f"{evaldir}/plots/{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")
    ]
    for flag, name in (
        ("dump_perconfig", "perconfig.dat"),
        ("dump_peratom", "peratom.dat"),
        ("dump_configs", "configs.pickle"),
    ):
        if extras[flag]:
            targets.append(f"{evaldir}/{name}")
    return targets


def all_evaluation_targets():
    targets = []
    for fit, cfg in FITS.items():
        targets += evaluation_targets(fit_dir(fit), cfg)
        targets += [f"{fit_dir(fit)}/plots/loss_curves.{ext}" for ext in ("png", "pdf")]
        for test_set in TEST_SETS:
            targets += evaluation_targets(test_set_dir(fit, test_set), cfg)
    return targets
