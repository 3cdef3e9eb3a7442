"""Several fits from one config: a ``fits:`` map, a ``sweep:`` grid, and committees.

``fits: {name: overrides}``
    each fit is the base config with ``overrides`` deep-merged into it (mappings merge key by
    key; lists and values replace).
``sweep: {dotted.key: [values]}``
    the product of the value lists makes the fits, named from their values
    (``layer_sizes-32_seed-1``). With ``fits:`` as well, every named fit is crossed with the
    grid (``small_layer_sizes-32_seed-1``).

Without either, the config is one fit named ``default``. Every fit's config is checked with
``prepare_config`` and is a complete config of its own. Settings that the whole workflow shares
(the data, test sets, resources: ``SHARED_FIELDS``) cannot differ between fits.

``committee: {members: N}`` makes a fit a committee: N models that differ
only in ``pytorch.seed`` (initial weights and the order of the batches; the split is the
same). Member 0 is the fit itself, with its own seed; member k > 0 gets a seed derived from
(seed, k) by ``member_seed``, so that sweeping ``pytorch.seed`` never gives two fits the same
member.
"""

import copy
import itertools
import json
import re

import yaml

from potflow.config.load import check_linear_fit_keys, config_source, is_linear, prepare_config
from potflow.descriptors.settings import descriptor_key
from potflow.errors import PotflowInputError
from potflow.hashing import settings_hash

# Top-level keys about the set of fits, not about one fit: dropped from each fit's config.
SWEEP_KEYS = ("fits", "sweep", "leaderboard")


# Fields every fit must share: the imported data, test sets and the rules' resources are
# made once for the whole workflow, and the metrics/checkpoint names are rule outputs.
SHARED_FIELDS = (
    "path", "scraper", "test_sets", "resources", "outfile.metrics", "descriptors.min_distance",
    "bispectrum.type", "bispectrum.numTypes", "pytorch.save_state_output",
)  # fmt: skip


DEFAULT_FIT = "default"


def deep_merge(base, overrides):
    """``base`` with ``overrides`` merged in: mappings key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def get_dotted(cfg, key, default=None):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def dotted_overrides(key, value):
    """``{"a": {"b": value}}`` for the key ``a.b``."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def format_value(value):
    """A short, filesystem-safe text for a swept value (part of a fit name)."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    elif value is None:
        text = "null"
    elif isinstance(value, list):
        # layer_sizes: the hidden widths say it all ([num_desc, 64, 64, 1] -> 64x64)
        if len(value) >= 2 and value[0] == "num_desc" and value[-1] == 1:
            value = value[1:-1] or ["none"]
        text = "x".join(format_value(v) for v in value)
    elif isinstance(value, dict):
        text = "-".join(f"{k}{format_value(v)}" for k, v in value.items())
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "_"


def short_keys(keys):
    """The shortest unique trailing part of each dotted key (``pytorch.seed`` -> ``seed``)."""
    parts = {k: k.split(".") for k in keys}
    short = {}
    for key in keys:
        for n in range(1, len(parts[key]) + 1):
            tail = parts[key][-n:]
            if sum(parts[other][-n:] == tail for other in keys) == 1:
                break
        short[key] = ".".join(tail)
    return short


def sweep_points(sweep, where="config"):
    """[(name, overrides)] of the product of the sweep's value lists, in the config's order."""
    if not sweep:
        return []
    keys = list(sweep)
    for key in keys:
        values = sweep[key]
        if not isinstance(values, list) or not values:
            raise PotflowInputError(where, f"config field 'sweep.{key}': must be a non-empty list of values")
        texts = [json.dumps(v, sort_keys=True) for v in values]
        dup = next((t for t in texts if texts.count(t) > 1), None)
        if dup is not None:
            raise PotflowInputError(where, f"config field 'sweep.{key}': lists {dup} twice")
        if key.split(".")[0] in SWEEP_KEYS:
            raise PotflowInputError(where, f"config field 'sweep.{key}': cannot sweep '{key.split('.')[0]}'")
    short = short_keys(keys)
    points = []
    for values in itertools.product(*(sweep[k] for k in keys)):
        name = "_".join(f"{short[k]}-{format_value(v)}" for k, v in zip(keys, values, strict=True))
        overrides = {}
        for k, v in zip(keys, values, strict=True):
            overrides = deep_merge(overrides, dotted_overrides(k, v))
        points.append((name, overrides))
    names = [n for n, _ in points]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise PotflowInputError(
            where, f"config field 'sweep': two points of the grid get the same fit name '{clash}' (values that print alike)"
        )
    return points


def check_shared(cfg, base, name, where):
    for field in SHARED_FIELDS:
        if get_dotted(cfg, field) != get_dotted(base, field):
            raise PotflowInputError(
                where,
                f"config field '{field}' of fit '{name}' differs from the base config: "
                "it is shared by every fit (set it outside fits:/sweep:)",
            )


def expand_fits(cfg, source="config"):
    """{fit name: checked config of that fit}; a config without fits/sweep is one fit, ``default``.

    ``cfg`` is a config checked by ``prepare_config`` (with its ``fits``, ``sweep`` and
    ``leaderboard``); the fits' configs have none of those three keys.
    """
    base = _without_sweep_keys(cfg)
    named = cfg.get("fits") or {}
    points = sweep_points(cfg.get("sweep") or {}, source)
    for name in named:  # (the schema has checked the names: letters, digits and . _ + -)
        bad = [k for k in named[name] if k in SWEEP_KEYS]
        if bad:
            raise PotflowInputError(source, f"config field 'fits.{name}.{bad[0]}': not allowed inside a fit")
    if not named and not points:
        one = prepare_config(base, source)
        if is_linear(one):
            check_linear_fit_keys(one["pytorch"], source)
        return {DEFAULT_FIT: _without_sweep_keys(one)}
    combos = []
    for fit, fit_over in named.items() or [(None, {})]:
        for point, point_over in points or [(None, {})]:
            name = "_".join(n for n in (fit, point) if n)
            combos.append((name, fit, fit_over, point_over))
    fits = {}
    for name, fit, fit_over, point_over in combos:
        where = f"{source} (fit '{name}')"
        fit_cfg = prepare_config(deep_merge(base, deep_merge(fit_over, point_over)), where)
        check_shared(fit_cfg, base, name, where)
        if is_linear(fit_cfg):  # the base's network settings serve its other fits
            check_linear_fit_keys(fit_over.get("pytorch"), where, f"fits.{fit}.pytorch", explicit=True)
            check_linear_fit_keys(point_over.get("pytorch"), where, "sweep.pytorch", explicit=True)
        fits[name] = _without_sweep_keys(fit_cfg)
    return fits


def check_workflow_fits(config, configfiles=()):
    """The Snakefile's check of the fits (``fits:``, ``sweep:``, a linear fit's keys): a bad one
    ends the run with one line naming the config file(s) and the field, as the config check does."""
    source = config_source(configfiles)
    try:
        expand_fits(prepare_config(config, source), source)
    except PotflowInputError as exc:
        raise SystemExit(f"potflow error: {exc}") from None


def _without_sweep_keys(cfg):
    return {k: v for k, v in cfg.items() if k not in SWEEP_KEYS}


def committee_size(cfg):
    return int(cfg["committee"]["members"])


def member_seed(seed, member):
    """pytorch.seed of committee member ``member``: the fit's own for member 0."""
    if member == 0:
        return int(seed)
    return int(settings_hash({"seed": int(seed), "member": int(member)}), 16) % 2**31


def member_config(cfg, member):
    """The config committee member ``member`` of a fit trains with (only the seed differs)."""
    out = copy.deepcopy(cfg)
    out["pytorch"]["seed"] = member_seed(cfg["pytorch"]["seed"], member)
    return out


def flatten(cfg, prefix=""):
    """{dotted key: value} of a nested config (lists kept whole)."""
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def varying_settings(fits):
    """{fit: {dotted key: value}} of the settings that differ between fits, in config order."""
    flat = {name: flatten(cfg) for name, cfg in fits.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    varying = [
        k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat.values()}) > 1
    ]
    return {name: {k: flat[name].get(k) for k in varying} for name in fits}


def setting_text(value):
    """A setting as one table cell: lists and mappings in YAML flow style ([num_desc, 16, 1])."""
    if isinstance(value, (list, dict)) or value is None:
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...")
    return value


def fits_table(fits):
    """One row per fit: the settings that differ between fits, descriptor key, committee seeds."""
    settings = varying_settings(fits)
    rows = []
    for name, cfg in fits.items():
        n = committee_size(cfg)
        row = {"fit": name}
        row.update({k: setting_text(v) for k, v in settings[name].items() if k != "committee.members"})
        row["descriptor_key"] = descriptor_key(cfg)
        row["committee_members"] = n
        row["member_seeds"] = " ".join(str(member_seed(cfg["pytorch"]["seed"], k)) for k in range(n))
        rows.append(row)
    import pandas as pd  # here, not at the top: Snakemake imports this module to parse the workflow

    return pd.DataFrame(rows)
