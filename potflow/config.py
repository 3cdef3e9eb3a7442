"""Load and check a potflow configuration (FitSNAP's sections and key names, in YAML)."""

import copy
import difflib
import hashlib
import json
import math
import warnings
from pathlib import Path

import jsonschema
import yaml

from potflow.errors import PotflowInputError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"
# Activations that LAMMPS's `mliap model nn` reader knows; it silently treats any other as linear.
LAMMPS_ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu")
TORCH_ACTIVATIONS = LAMMPS_ACTIVATIONS + ("silu", "softplus")
# Settings that change the descriptor files; the descriptor key is their hash.
DESCRIPTOR_KEYS = (
    "twojmax", "rcutfac", "rfac0", "rmin0", "wj", "radelem", "type", "wselfallflag",
    "chemflag", "bzeroflag", "switchflag", "bnormflag",
)  # fmt: skip


def load_schema():
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})




def _error_line(error, source):
    path = ".".join(str(p) for p in error.absolute_path)
    known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict) and known:
        # name the unknown key itself, with the nearest known one (a typo, usually)
        key = next(str(k) for k in error.instance if k not in known)
        near = difflib.get_close_matches(key, list(known), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else f" (known: {', '.join(known)})"
        return PotflowInputError(source, f"config field '{'.'.join(filter(None, [path, key]))}': unknown key{hint}")
    return PotflowInputError(source, f"config field '{path or '(top level)'}': {error.message}")


def apply_schema(cfg, source="config"):
    """Fill defaults and check types in place; one-line error naming the field."""
    schema = load_schema()
    validator = _with_defaults(jsonschema.validators.validator_for(schema))(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise _error_line(errors[0], source)
    return cfg


def check_config(cfg, source="config"):
    """Cross-field checks the schema cannot express."""

    def bad(field, msg):
        raise PotflowInputError(source, f"config field '{field}': {msg}")

    bis = cfg["bispectrum"]
    n = bis["numTypes"]
    for key in ("type", "wj", "radelem"):
        if len(bis[key]) != n:
            bad(f"bispectrum.{key}", f"has {len(bis[key])} entries but numTypes is {n}")
    if len(set(bis["type"])) != n:
        bad("bispectrum.type", "lists an element twice")
    if bis["quadraticflag"]:
        bad(
            "bispectrum.quadraticflag",
            "quadraticflag 1 is not supported: LAMMPS cannot compute descriptor gradients "
            "(dgradflag 1) for quadratic terms, and a network learns those couplings itself",
        )
    if not (bis["bikflag"] and bis["dgradflag"]):
        bad("bispectrum.bikflag/dgradflag", "must both be 1: forces need per-atom descriptor gradients")
    solver = cfg["solver"]["solver"]
    if solver.upper() != "PYTORCH":
        bad("solver.solver", f"'{solver}' is not supported: potflow fits neural networks (use PYTORCH)")
    torch_cfg = cfg["pytorch"]
    layers = torch_cfg["layer_sizes"]
    if layers[0] != "num_desc" and not isinstance(layers[0], int):
        bad("pytorch.layer_sizes", "must start with num_desc")
    if any(not isinstance(x, int) for x in layers[1:]):
        bad("pytorch.layer_sizes", "only the first entry may be num_desc; the others are layer widths")
    if isinstance(layers[0], int):
        # an explicit width must be the descriptor count: the network's input is B_i itself
        from potflow.descriptors import num_descriptors  # (descriptors imports this module)

        K = num_descriptors(bis["twojmax"], bis["chemflag"], n)
        if layers[0] != K:
            bad(
                "pytorch.layer_sizes",
                f"starts with {layers[0]} but each atom has {K} descriptors (bispectrum.twojmax "
                f"{bis['twojmax']}{', chemflag 1' if bis['chemflag'] else ''}); start it with num_desc",
            )
    if layers[-1] != 1:
        bad("pytorch.layer_sizes", f"must end with 1 (one energy per atom), not {layers[-1]}")
    act = torch_cfg["activation"]
    if act not in TORCH_ACTIVATIONS:
        bad("pytorch.activation", f"unknown activation '{act}'; use one of {', '.join(TORCH_ACTIVATIONS)}")
    if act not in LAMMPS_ACTIVATIONS:
        if cfg["md"]["enabled"]:
            bad(
                "pytorch.activation",
                f"'{act}' cannot be exported to LAMMPS ML-IAP (it knows {', '.join(LAMMPS_ACTIVATIONS)}) "
                "and md.enabled is true",
            )
        warnings.warn(f"activation '{act}' cannot be exported to LAMMPS ML-IAP", stacklevel=2)
    ne = torch_cfg["num_elements"]
    if ne is not None and ne != n:
        bad("pytorch.num_elements", f"is {ne} but bispectrum.numTypes is {n}")
    for el in cfg["eshift"]:
        if el not in bis["type"]:
            bad(f"eshift.{el}", f"element '{el}' is not in bispectrum.type {bis['type']}")
    for key, value in cfg["pytorch"].items():
        if isinstance(value, float) and not math.isfinite(value):
            bad(f"pytorch.{key}", "must be a finite number")
    return cfg


def prepare_config(cfg, source="config"):
    """Defaults, types and cross-field checks; returns a new dict."""
    cfg = copy.deepcopy(dict(cfg or {}))
    apply_schema(cfg, source)
    check_config(cfg, source)
    return cfg


def config_source(configfiles=()):
    """How errors name a Snakemake run's config: its config file(s)."""
    names = []
    for f in configfiles:
        path = Path(f).resolve()
        try:
            shown = str(path.relative_to(Path.cwd()))
        except ValueError:
            shown = str(path)
        if shown not in names:
            names.append(shown)
    return f"config {' + '.join(names)}" if names else "config"


def check_workflow_config(config, configfiles=(), basedir="."):
    """The Snakefile's first check: a bad config ends the run with ONE line naming the config
    file(s) and the field, exit status 1 (not Snakemake's schema dump or traceback)."""
    try:
        cfg = prepare_config(config, source=config_source(configfiles))
        fit_groups(cfg, basedir)
    except PotflowInputError as exc:
        raise SystemExit(f"potflow error: {exc}") from None


def load_config(path):
    path = Path(path)
    try:
        with open(path) as fh:
            cfg = yaml.safe_load(fh)
    except OSError as exc:
        raise PotflowInputError(path, f"cannot read config: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PotflowInputError(path, f"not valid YAML: {str(exc).splitlines()[0]}") from None
    if cfg is not None and not isinstance(cfg, dict):
        raise PotflowInputError(path, "config must be a mapping of sections")
    return prepare_config(cfg, source=path)


def elements(cfg):
    return list(cfg["bispectrum"]["type"])


def canonical_json(obj):
    """One text per settings value whatever the key order (rule params, hashes)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def settings_hash(obj, length=12):
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def descriptor_settings(cfg):
    """Everything the descriptor files depend on (bispectrum, reference, storage)."""
    bis = cfg["bispectrum"]
    return {
        "bispectrum": {k: bis[k] for k in DESCRIPTOR_KEYS},
        "reference": cfg["reference"],
        "gradient_dtype": cfg["descriptors"]["gradient_dtype"],
        "forces": bool(cfg["calculator"]["force"]) and any_force_weight(cfg),
    }


def descriptor_key(cfg):
    return settings_hash(descriptor_settings(cfg))


def any_force_weight(cfg):
    """False for an energy-only fit: then no gradient rows are computed or stored."""
    fw = cfg["pytorch"]["force_weight"]
    if fw is not None:
        return fw > 0
    groups = cfg["groups"]
    weights = [groups["defaults"].get("fweight", 1.0)]
    weights += [g.get("fweight", 1.0) for g in named_groups(cfg).values()]
    return any(w > 0 for w in weights)


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
