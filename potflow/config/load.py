"""Load and check a potflow configuration (FitSNAP's sections and key names, in YAML)."""

import copy
import difflib
import functools
import math
import warnings
from pathlib import Path

import jsonschema
import yaml

from potflow.config.groups import fit_groups
from potflow.descriptors.snap_index import num_descriptors
from potflow.errors import PotflowInputError

# shipped inside the package (schemas/config.schema.yaml at the top of the checkout links here)
SCHEMA_PATH = Path(__file__).resolve().with_name("config.schema.yaml")


# Activations that LAMMPS's `mliap model nn` reader knows; it silently treats any other as linear.
LAMMPS_ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu")


TORCH_ACTIVATIONS = LAMMPS_ACTIVATIONS + ("silu", "softplus")


# solver.solver: the network, or linear SNAP solved exactly (potflow.linear)
NETWORK_SOLVER = "PYTORCH"
LINEAR_SOLVERS = ("SVD", "RIDGE")
# FitSNAP's other solvers: named in the refusal, so a FitSNAP user knows it is not a typo
OTHER_FITSNAP_SOLVERS = ("LASSO", "ARD", "SLATE", "ANL", "MCMC", "OPT", "BCS", "SCALAPACK", "JAX", "NETWORK")


# pytorch keys a linear fit reads as well: FitSNAP's global weights and training fraction (they
# override the groups'), the memory budget of the streamed solve, the shared checkpoint name
# and the CPU threads. Every other pytorch key configures the network only.
LINEAR_PYTORCH_KEYS = ("energy_weight", "force_weight", "virial_weight", "training_fraction", "memory_budget_mb", "save_state_output", "threads")


def is_linear(cfg):
    """A linear SNAP fit (solver.solver SVD or RIDGE), not a network."""
    return str(cfg["solver"]["solver"]).upper() in LINEAR_SOLVERS


@functools.cache
def _schema_text():
    # the workflow checks every fit's config at parse time: read and parse the schema once, with
    # libyaml where PyYAML has it (the pure-Python parser took ~0.3 s a time)
    with open(SCHEMA_PATH) as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load_schema():
    """The config schema (a fresh copy: callers may change it)."""
    return copy.deepcopy(_schema_text())


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
    check_solver(cfg, bad)
    torch_cfg = cfg["pytorch"]
    layers = torch_cfg["layer_sizes"]
    if layers[0] != "num_desc" and not isinstance(layers[0], int):
        bad("pytorch.layer_sizes", "must start with num_desc")
    if any(not isinstance(x, int) for x in layers[1:]):
        bad("pytorch.layer_sizes", "only the first entry may be num_desc; the others are layer widths")
    if isinstance(layers[0], int):
        # an explicit width must be the descriptor count: the network's input is B_i itself

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


def check_solver(cfg, bad):
    """solver.solver is PYTORCH, SVD or RIDGE (written in capitals from here on)."""
    name = str(cfg["solver"]["solver"])
    solver = name.upper()
    known = (NETWORK_SOLVER, *LINEAR_SOLVERS)
    if solver in OTHER_FITSNAP_SOLVERS:
        bad("solver.solver", f"FitSNAP's solver {name} is not implemented; use {', '.join(known)}")
    if solver not in known:
        bad("solver.solver", f"unknown solver '{name}'; use {', '.join(known)}")
    cfg["solver"]["solver"] = solver
    if solver in LINEAR_SOLVERS and cfg["committee"]["members"] > 1:
        bad(
            "committee.members",
            f"a linear fit (solver.solver {solver}) is exact and has no random start: its "
            "committee members would be identical; use members: 1",
        )


def network_keys_set(pytorch, explicit=False):
    """pytorch keys that only a network reads, set in ``pytorch`` (a config's section, or one
    fit's overrides): those that differ from the schema's defaults, or with ``explicit`` every
    one that is there at all."""
    defaults = apply_schema({})["pytorch"]
    return [
        key for key, value in pytorch.items()
        if key not in LINEAR_PYTORCH_KEYS and (explicit or value != defaults.get(key))
    ]  # fmt: skip


def check_linear_fit_keys(pytorch, source, field="pytorch", explicit=False):
    """A linear fit asked to use a network-only key is refused (it would be ignored)."""
    keys = network_keys_set(pytorch or {}, explicit)
    if keys:
        raise PotflowInputError(
            source,
            f"config field '{field}.{keys[0]}': a network setting, but the fit is linear "
            f"(solver.solver SVD/RIDGE reads only {', '.join(f'pytorch.{k}' for k in LINEAR_PYTORCH_KEYS)}); "
            "remove it, or use solver PYTORCH",
        )


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
