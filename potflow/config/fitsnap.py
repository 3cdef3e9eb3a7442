"""Read FitSNAP input scripts (``*.in``, configparser INI) as potflow configs.

Each FitSNAP section becomes the lower-case section of the same name with FitSNAP's own key
names (``[BISPECTRUM] twojmax`` -> ``bispectrum: {twojmax: ...}``); values are typed the way
FitSNAP reads them (space-separated lists become lists, flags 0/1). Keys potflow does not use
are never dropped silently: each one becomes a :class:`Notice`, either *ignored* (harmless:
FitSNAP bookkeeping that potflow does anyway or does not need) or *unsupported* (a setting that
would change the fit); ``strict=True`` turns unsupported keys into an error.

``[PATH] dataPath`` is relative to the input file's folder, as in FitSNAP; so is
``[PYTORCH] save_state_input`` (FitSNAP takes it from the working directory, which the workflow
does not share). Both are written as absolute paths, so the workflow finds them from any working
directory. As in FitSNAP, only the groups listed in ``[GROUPS]`` are fitted: other
folders found in ``dataPath`` go to ``groups.exclude``. Where a key is absent and FitSNAP's
default differs from potflow's (e.g. ``bzeroflag 0``, ``scraper JSON``), FitSNAP's default is
written, so the same input means the same fit.
"""

import ast
import configparser
import contextlib
import copy
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from potflow.config.groups import discover_groups, named_groups
from potflow.config.load import (
    LINEAR_SOLVERS,
    NETWORK_SOLVER,
    OTHER_FITSNAP_SOLVERS,
    load_config,
    prepare_config,
)
from potflow.errors import PotflowInputError

# Sections that only one solver reads: FitSNAP itself refuses them next to a solver of
# another name. potflow reads [PYTORCH] (solver PYTORCH) and [RIDGE] (solver RIDGE).
SOLVER_SECTIONS = {"PYTORCH": "PYTORCH", "RIDGE": "RIDGE", "LASSO": "LASSO", "ARD": "ARD", "SLATE": "SLATE", "JAX": "JAX", "NETWORK": "NETWORK"}


DESCRIPTOR_SECTIONS = ("ACE", "PYACE", "CUSTOM", "BASIC")


# Output order of the YAML sections (the schema's order).
SECTION_ORDER = (
    "bispectrum", "calculator", "eshift", "pytorch", "solver", "ridge", "scraper", "path", "outfile",
    "reference", "groups", "extras",
)  # fmt: skip


YAML_SUFFIXES = (".yaml", ".yml", ".json")


FITSNAP_SUFFIXES = (".in", ".ini", ".cfg")


@dataclass(frozen=True)
class Notice:
    """A key of the input file that potflow does not convert."""

    section: str
    key: str
    value: str
    kind: str  # "ignored" (harmless), "unsupported" (would change the fit) or "note"
    reason: str

    def __str__(self):
        key = f" {self.key}" if self.key else ""
        value = f" = {self.value}" if self.value else ""
        return f"[{self.section}]{key}{value}: {self.kind}: {self.reason}"


@dataclass
class Conversion:
    """A converted input: the potflow config (only what the file sets) and the notices."""

    source: Path
    config: dict
    notices: list = field(default_factory=list)
    defaults: list = field(default_factory=list)  # FitSNAP defaults written for absent keys

    @property
    def unsupported(self):
        return [n for n in self.notices if n.kind == "unsupported"]


class _Bad(Exception):
    """A value that cannot be read; the caller adds file, section and key."""


_TRUE = ("1", "y", "yes", "t", "true", "on")


_FALSE = ("0", "n", "no", "f", "false", "off")


def _flag(text):
    word = text.strip().lower()
    if word in _TRUE:
        return 1
    if word in _FALSE:
        return 0
    raise _Bad(f"'{text}' is not a flag (0 or 1)")


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise _Bad(f"'{text}' is not an integer") from None


def _float(text):
    try:
        return float(text)
    except ValueError:
        raise _Bad(f"'{text}' is not a number") from None


def _floats(text):
    values = text.split()
    if not values:
        raise _Bad("is empty")
    return [_float(v) for v in values]


def _words(text):
    words = text.split()
    if not words:
        raise _Bad("is empty")
    return words


def _string(text):
    if not text.strip():
        raise _Bad("is empty")
    return text.strip()


def _lower(text):
    return _string(text).lower()


def _twojmax(text):
    """FitSNAP takes one value per element; LAMMPS's compute sna/atom takes one for all."""
    values = [_int(v) for v in _words(text)]
    if len(set(values)) != 1:
        raise _Bad(f"per-element values {values} differ; potflow (LAMMPS) uses one twojmax")
    return values[0]


def _layer_sizes(text):
    sizes = []
    for word in _words(text):
        sizes.append(word if word == "num_desc" else _int(word))
    return sizes


def _dtype_setting(text):
    # FitSNAP: dtype_setting 1 -> float32, anything else -> float64.
    return "float32" if _int(text) == 1 else "float64"


def _file_name(text):
    # Output files land in the fit's own folder (results/fits/{fit}/).
    return Path(_string(text)).name


def _scraper(text):
    name = _string(text).upper()
    if name not in ("JSON", "XYZ"):
        raise _Bad(f"scraper '{text}' not supported: potflow reads FitSNAP JSON or extended XYZ")
    return name


def _calculator(text):
    name = _string(text)
    if name.upper() != "LAMMPSSNAP":
        raise _Bad(
            f"calculator '{name}' not supported: potflow computes SNAP bispectrum "
            "descriptors (LAMMPSSNAP)"
        )
    return "LAMMPSSNAP"


_BISPECTRUM_FLAGS = (
    "wselfallflag", "chemflag", "bzeroflag", "quadraticflag", "bikflag", "dgradflag",
    "switchflag", "bnormflag",
)  # fmt: skip


# section -> key -> (potflow key, reader); the potflow section is the lower-case name.
CONVERTED = {
    "BISPECTRUM": {
        "numTypes": ("numTypes", _int),
        "twojmax": ("twojmax", _twojmax),
        "rcutfac": ("rcutfac", _float),
        "rfac0": ("rfac0", _float),
        "rmin0": ("rmin0", _float),
        "wj": ("wj", _floats),
        "radelem": ("radelem", _floats),
        "type": ("type", _words),
        **{k: (k, _flag) for k in _BISPECTRUM_FLAGS},
    },
    "CALCULATOR": {
        "calculator": ("calculator", _calculator),
        **{k: (k, _flag) for k in ("energy", "force", "stress", "per_atom_energy", "nonlinear")},
    },
    "PYTORCH": {
        "layer_sizes": ("layer_sizes", _layer_sizes),
        "learning_rate": ("learning_rate", _float),
        "num_epochs": ("num_epochs", _int),
        "batch_size": ("batch_size", _int),
        "save_state_output": ("save_state_output", _file_name),
        "save_freq": ("save_freq", _int),
        "energy_weight": ("energy_weight", _float),
        "force_weight": ("force_weight", _float),
        "virial_weight": ("virial_weight", _float),
        "training_fraction": ("training_fraction", _float),
        "multi_element_option": ("multi_element_option", _int),
        "num_elements": ("num_elements", _int),
        "manual_seed_flag": ("manual_seed_flag", _flag),
        "shuffle_flag": ("shuffle_flag", _flag),
        "dtype_setting": ("dtype", _dtype_setting),
    },
    "RIDGE": {"alpha": ("alpha", _float)},
    "SCRAPER": {"scraper": ("scraper", _scraper)},
    "OUTFILE": {"metrics": ("metrics", _file_name), "potential": ("potential", _file_name)},
    "REFERENCE": {
        "units": ("units", _lower),
        "atom_style": ("atom_style", _lower),
        "pair_style": ("pair_style", _string),
    },
    "EXTRAS": {k: (k, _flag) for k in ("dump_peratom", "dump_perconfig", "dump_configs")},
}


LINEAR_SOLVER_KEYS = (
    "normalweight", "normratio", "nsam", "cov_nugget", "mcmc_num", "mcmc_gamma", "mcmc_sigma",
    "merr_mult", "merr_method", "merr_cfs",
)  # fmt: skip


# Keys potflow does not need: FitSNAP bookkeeping it does anyway, or linear-model outputs.
IGNORED = {
    "SOLVER": {
        "compute_testerrs": "potflow always reports test-set errors",
        "detailed_errors": "potflow always writes per-group errors and peratom/perconfig files",
        **dict.fromkeys(LINEAR_SOLVER_KEYS, "read only by FitSNAP's other solvers (not by SVD or RIDGE)"),
    },
    "MEMORY": {
        "memory": "potflow memory-maps descriptor files instead of sizing shared arrays",
        "override": "potflow memory-maps descriptor files instead of sizing shared arrays",
    },
    "EXTRAS": dict.fromkeys(
        ("dump_descriptors", "dump_truth", "dump_weights", "dump_dataframe"),
        "linear-model dumps; descriptors are kept in results/descriptors/{key}/{group}/",
    ),
    "OUTFILE": {
        "output_style": "potflow writes LAMMPS ML-IAP files (and pair_style snap files for a linear fit)",
        "metrics_style": "potflow writes FitSNAP's metrics table layout",
        "detailed_errors": "potflow always writes per-group errors",
        **dict.fromkeys(
            ("descriptors", "truth", "weights", "dataframe"), "linear-model dump file name"
        ),
    },
    "PYTORCH": {"output_file": "potflow names the exported model after [OUTFILE] potential"},
    "RIDGE": {"local_solver": "potflow solves the ridge problem itself (QR and SVD), as FitSNAP's local solver"},
    "CALCULATOR": {
        "dee": "detailed error files: potflow writes perconfig.dat and peratom.dat",
        "dfe": "detailed error files: potflow writes perconfig.dat and peratom.dat",
    },
}


# Output file names potflow writes under fixed names: harmless when the name is FitSNAP's.
FIXED_NAMES = {"peratom": "peratom.dat", "perconfig": "perconfig.dat", "configs": "configs.pickle"}


# Switches that are harmless when off (potflow behaves as FitSNAP then) but change the fit on.
OFF_ONLY = {
    "BISPECTRUM": {
        "switchinnerflag": "inner cutoff switching is not supported",
        "alloyflag": "an old FitSNAP switch for explicit multi-element descriptors",
        "BOLTZ": "Boltzmann energy weighting is not supported",
    },
    "CALCULATOR": {"per_atom_scalar": "fitting per-atom scalars is not supported"},
    "EXTRAS": {
        "multinode_testing": "not supported",
        "apply_transpose": "linear-solver option",
        "only_test": "evaluating without a fit is not supported",
    },
    "GROUPS": {"BOLTZ": "Boltzmann energy weighting is not supported"},
}


GROUP_OPTIONS = ("group_sections", "group_types", "smartweights", "random_sampling", "random_seed")


# [GROUPS] keys FitSNAP's VASP tooling reads; never a group name.
GROUP_VASP_KEYS = (
    "vasp_use_TOTEN", "vasp_json_pathname", "vasp_ignore_incomplete", "vasp_ignore_jsons",
    "vasp_unconverged_label",
)  # fmt: skip


GROUP_COLUMNS = ("training_size", "testing_size", "eweight", "fweight", "vweight")


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


# FitSNAP's defaults where they differ from potflow's: (section, key, FitSNAP value).
FITSNAP_DEFAULTS = (
    ("bispectrum", "bzeroflag", 0),
    ("scraper", "scraper", "JSON"),
    ("path", "dataPath", "JSON"),
    ("pytorch", "layer_sizes", ["num_desc", 512, 512, 1]),
    ("pytorch", "learning_rate", 1.0e-2),
    ("pytorch", "num_epochs", 10),
    ("pytorch", "manual_seed_flag", 0),
    ("pytorch", "save_state_output", "FitTorchModel"),
    ("outfile", "metrics", "fitsnap_metrics"),
    ("outfile", "potential", "fitsnap_potential"),
    ("extras", "dump_peratom", 0),
    ("extras", "dump_perconfig", 0),
    ("extras", "dump_configs", 0),
)


def _parser():
    # As FitSNAP reads its input: case-sensitive keys, '#' starts an inline comment.
    parser = configparser.ConfigParser(
        inline_comment_prefixes=("#",), interpolation=None, default_section="\0none"
    )
    parser.optionxform = str
    return parser


def parse_fitsnap_file(path):
    """The input file as {SECTION: {key: text}} in file order."""
    path = Path(path)
    parser = _parser()
    try:
        with open(path) as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise PotflowInputError(path, f"cannot read FitSNAP input: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PotflowInputError(path, "not a text file") from None
    except configparser.Error as exc:
        raise PotflowInputError(path, _parse_error(exc)) from None
    sections = {}
    for name in parser.sections():
        upper = name.upper()
        if upper in sections:
            raise PotflowInputError(path, f"section [{upper}] appears twice")
        sections[upper] = dict(parser.items(name))
    return sections


def _parse_error(exc):
    """configparser's complaint as one line with the line number."""
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"line {exc.lineno}: section [{exc.section}] appears twice"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"line {exc.lineno}: [{exc.section}] {exc.option} appears twice"
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno}: not a FitSNAP input file: settings must follow a [SECTION] line"
    if isinstance(exc, configparser.ParsingError) and exc.errors:
        lineno, line = exc.errors[0]
        with contextlib.suppress(ValueError, SyntaxError):
            line = ast.literal_eval(line)  # configparser keeps the repr() of the line
        return f"line {lineno}: not a FitSNAP input file: cannot read {str(line).strip()!r}"
    return "not a FitSNAP input file: " + " ".join(str(exc).split())


class _Converter:
    def __init__(self, sections, source):
        self.sections = sections
        self.source = Path(source)
        self.folder = self.source.resolve().parent
        self.cfg = {}
        self.notices = []
        self.defaults = []

    # helpers
    def fail(self, section, key, msg):
        where = f"[{section}] {key}" if key else f"[{section}]"
        raise PotflowInputError(self.source, f"{where}: {msg}")

    def notice(self, section, key, value, kind, reason):
        self.notices.append(Notice(section, key, value, kind, reason))

    def ignored(self, section, key, value, reason):
        self.notice(section, key, value, "ignored", reason)

    def unsupported(self, section, key, value, reason):
        self.notice(section, key, value, "unsupported", reason)

    def read(self, section, key, text, reader):
        try:
            return reader(text)
        except _Bad as exc:
            self.fail(section, key, str(exc))

    def put(self, section, key, value):
        self.cfg.setdefault(section, {})[key] = value

    def resolve(self, text):
        return str((self.folder / Path(text).expanduser()).resolve())

    # whole file
    def run(self):
        self.check_solver()
        if "BISPECTRUM" not in self.sections:
            self.fail("BISPECTRUM", None, "section missing: potflow needs the SNAP settings")
        if "type" not in self.sections["BISPECTRUM"]:
            self.fail("BISPECTRUM", "type", "missing: list the element of each atom type")
        for name, items in self.sections.items():
            handler = getattr(self, f"section_{name.lower()}", None)
            if handler is not None:
                handler(name, items)
            elif name in DESCRIPTOR_SECTIONS:
                self.unsupported(name, "", "", "potflow computes SNAP descriptors only")
            else:
                self.unsupported(name, "", "", "not a section potflow knows")
        if "GROUPS" not in self.sections and self.sections.get("PATH", {}).get("groupFile"):
            self.section_groups("GROUPS", {})
        self.apply_fitsnap_defaults()
        self.exclude_unlisted_groups()
        return Conversion(self.source, self.cfg, self.notices, self.defaults)

    def check_solver(self):
        # FitSNAP's default solver is SVD; a [PYTORCH] section alone is clear enough.
        default = "PYTORCH" if "PYTORCH" in self.sections else "SVD"
        text = self.sections.get("SOLVER", {}).get("solver", default).strip()
        solver = text.upper()
        known = ", ".join((NETWORK_SOLVER, *LINEAR_SOLVERS))
        if solver in OTHER_FITSNAP_SOLVERS:
            self.fail("SOLVER", "solver", f"FitSNAP's solver {text} is not implemented; use {known}")
        if solver not in (NETWORK_SOLVER, *LINEAR_SOLVERS):
            self.fail("SOLVER", "solver", f"unknown solver {text}; use {known}")
        for name, owner in SOLVER_SECTIONS.items():
            if name in self.sections and owner != solver:
                self.fail(name, None, f"section of the {owner} solver, but [SOLVER] solver is {solver}")
        if solver == NETWORK_SOLVER and "PYTORCH" not in self.sections:
            self.fail("PYTORCH", None, "section missing: solver = PYTORCH fits the network it describes")
        self.solver = solver

    def generic(self, name, items, skip=()):
        converted = CONVERTED.get(name, {})
        for key, text in items.items():
            if key in skip:
                continue
            if key in converted:
                target, reader = converted[key]
                self.put(name.lower(), target, self.read(name, key, text, reader))
                if reader is _file_name and Path(text.strip()).name != text.strip():
                    msg = "folder dropped: potflow writes it in results/fits/{fit}/"
                    self.notice(name, key, text, "note", msg)
            else:
                self.other_key(name, key, text)

    def other_key(self, name, key, text):
        if key in IGNORED.get(name, {}):
            self.ignored(name, key, text, IGNORED[name][key])
        elif key in OFF_ONLY.get(name, {}):
            if _is_off(text):
                self.ignored(name, key, text, "off, as potflow does")
            else:
                self.unsupported(name, key, text, OFF_ONLY[name][key])
        else:
            known = {k.lower(): k for k in CONVERTED.get(name, {})}
            hint = f" (did you mean {known[key.lower()]}?)" if key.lower() in known else ""
            self.unsupported(name, key, text, f"unknown key{hint}")

    # sections
    def section_bispectrum(self, name, items):
        self.generic(name, items, skip=("sinner", "dinner"))
        inner_on = not _is_off(items.get("switchinnerflag", "0"))
        for key in ("sinner", "dinner"):
            if key in items:
                kind = "unsupported" if inner_on else "ignored"
                self.notice(name, key, items[key], kind, "inner cutoff (switchinnerflag 1)")

    def section_calculator(self, name, items):
        self.generic(name, items)

    def section_pytorch(self, name, items):
        self.generic(name, items, skip=("save_state_input",))
        if "save_state_input" in items:
            text = items["save_state_input"].strip()
            if text and text != "None":
                self.put("pytorch", "save_state_input", self.resolve(text))

    def section_solver(self, name, items):
        self.put("solver", "solver", self.solver)
        self.generic(name, items, skip=("solver",))

    def section_ridge(self, name, items):
        self.generic(name, items)

    def section_scraper(self, name, items):
        self.generic(name, items)

    def section_path(self, name, items):
        for key, text in items.items():
            if key == "dataPath":
                self.put("path", "dataPath", self.resolve(self.read(name, key, text, _string)))
            elif key != "groupFile":
                self.other_key(name, key, text)

    def section_outfile(self, name, items):
        for key, text in items.items():
            if key in FIXED_NAMES:
                fixed = FIXED_NAMES[key]
                if Path(text.strip()).name == fixed:
                    self.ignored(name, key, text, f"potflow writes {fixed}")
                else:
                    self.unsupported(name, key, text, f"potflow always writes {fixed}")
            else:
                self.generic(name, {key: text})

    def section_reference(self, name, items):
        coeffs = [text.strip() for key, text in items.items() if key.startswith("pair_coeff")]
        self.generic(name, items, skip=[k for k in items if k.startswith("pair_coeff")])
        if coeffs:
            self.put("reference", "pair_coeff", coeffs)

    def section_eshift(self, name, items):
        types = self.sections["BISPECTRUM"]["type"].split()
        shifts = {}
        for key, text in items.items():
            if key in types:
                shifts[key] = self.read(name, key, text, _float)
            else:
                self.ignored(name, key, text, f"not an element of [BISPECTRUM] type {types}")
        self.cfg["eshift"] = shifts

    def section_extras(self, name, items):
        self.generic(name, items)

    def section_memory(self, name, items):
        for key, text in items.items():
            self.other_key(name, key, text)

    def section_groups(self, name, items):
        # FitSNAP's defaults for the two table keys.
        columns = items.get("group_sections", "name size eweight fweight vweight")
        types = items.get("group_types", "str float float float float")
        columns = self.read(name, "group_sections", columns, _words)
        types = self.read(name, "group_types", types, _words)
        if columns[0] != "name":
            self.fail(name, "group_sections", f"must start with name, not {columns[0]}")
        if len(types) != len(columns):
            msg = f"has {len(types)} entries but group_sections has {len(columns)}"
            self.fail(name, "group_types", msg)
        for t in types:
            if t not in _TYPES:
                self.fail(name, "group_types", f"unknown type '{t}' (use str, int, float or bool)")
        columns, types = columns[1:], [_TYPES[t] for t in types[1:]]
        for col, typ in zip(columns, types, strict=True):
            if col not in GROUP_COLUMNS + ("size",):
                self.unsupported(name, "group_sections", col, "unknown group column")
            elif typ not in (int, float):
                self.fail(name, "group_types", f"column {col} must be int or float")
        groups = self.cfg.setdefault("groups", {})
        for key in ("group_sections", "group_types"):
            if key in items:
                groups[key] = items[key].split()
        for key in ("smartweights", "random_sampling"):
            if key in items:
                groups[key] = self.read(name, key, items[key], _flag)
        if "random_seed" in items:
            seed = self.read(name, "random_seed", items["random_seed"], _float)
            if seed < 0 or seed != int(seed):
                self.fail(name, "random_seed", f"'{items['random_seed']}' is not a whole number")
            groups["random_seed"] = int(seed)
        rows = {k: v for k, v in items.items() if k not in GROUP_OPTIONS}
        for key in GROUP_VASP_KEYS + tuple(OFF_ONLY["GROUPS"]):
            if key in rows:
                text = rows.pop(key)
                if key in OFF_ONLY["GROUPS"]:
                    self.other_key(name, key, text)
                else:
                    self.ignored(name, key, text, "VASP conversion setting")
        rows.update(self.group_file_rows())
        for group, text in rows.items():
            groups[group] = self.group_row(name, group, text, columns, types)

    def group_file_rows(self):
        """Rows of [PATH] groupFile, which FitSNAP reads instead of the [GROUPS] rows."""
        text = self.sections.get("PATH", {}).get("groupFile", "").strip()
        if not text or text == "None":
            return {}
        path = Path(self.resolve(text))
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            self.fail("PATH", "groupFile", f"cannot read {path}: {exc}")
        rows = {}
        for line in lines:
            words = line.split("#", 1)[0].split()
            if words:
                rows[words[0]] = " ".join(words[1:])
        return rows

    def group_row(self, name, group, text, columns, types):
        values = text.split()
        if len(values) != len(columns):
            names = " ".join(columns)
            msg = f"has {len(values)} values but group_sections names {len(columns)}: {names}"
            self.fail(name, group, msg)
        row = {}
        for col, typ, word in zip(columns, types, values, strict=True):
            reader = _int if typ is int else _float
            value = self.read(name, group, word, reader)
            if col == "size":
                # FitSNAP's old one-size form: a fraction trains on it and tests on the rest.
                row["training_size"] = value
                if value <= 1 and typ is float:
                    row["testing_size"] = round(1.0 - value, 12)
            elif col in GROUP_COLUMNS:
                if col.endswith("_size") and typ is int and value == 1:
                    msg = f"{col} is the count 1, which potflow reads as the fraction 1.0"
                    self.unsupported(name, group, text, msg)
                row[col] = value
        return row

    # after all sections
    def apply_fitsnap_defaults(self):
        for section, key, value in FITSNAP_DEFAULTS:
            if section == "pytorch" and self.solver != NETWORK_SOLVER:
                continue  # a linear fit has no network
            if key not in self.cfg.get(section, {}):
                if (section, key) == ("path", "dataPath"):
                    value = self.resolve(value)
                self.put(section, key, copy.deepcopy(value))
                self.defaults.append(f"{section}.{key}")
        self.cfg.setdefault("solver", {})["solver"] = self.solver

    def exclude_unlisted_groups(self):
        """FitSNAP fits only the groups [GROUPS] lists; potflow fits every group it finds."""
        listed = set(named_groups({"groups": self.cfg.get("groups", {})}))
        if not listed:
            msg = "no group rows: every group in dataPath is fitted with default sizes and weights"
            self.notice("GROUPS", "", "", "note", msg)
            return
        data_dir = self.cfg["path"]["dataPath"]
        try:
            found = discover_groups(data_dir, self.cfg["scraper"]["scraper"])
        except PotflowInputError:
            msg = "no data there now: groups missing from [GROUPS] could not be excluded"
            self.notice("PATH", "dataPath", data_dir, "note", msg)
            return
        missing = sorted(listed - set(found))
        if missing:
            self.fail("GROUPS", None, f"groups with no data in {data_dir}: {', '.join(missing)}")
        unlisted = sorted(set(found) - listed)
        if unlisted:
            self.cfg["groups"]["exclude"] = unlisted


def _is_off(text):
    try:
        return _flag(text) == 0
    except _Bad:
        try:
            return float(text) == 0
        except ValueError:
            return False


def convert_sections(sections, source):
    """Convert parsed sections ({SECTION: {key: text}}) of the input file ``source``."""
    conv = _Converter(sections, source).run()
    conv.config = {k: conv.config[k] for k in SECTION_ORDER if k in conv.config}
    return conv


def read_fitsnap_input(path, strict=False):
    """Convert a FitSNAP input file and check the result with potflow's config rules.

    Returns a :class:`Conversion` whose ``config`` holds only what the file sets (potflow's
    defaults fill the rest when the config is prepared). Raises ``PotflowInputError`` (one line)
    for bad input, for a non-PyTorch solver and, with ``strict``, for unsupported keys.
    """
    path = Path(path)
    conv = convert_sections(parse_fitsnap_file(path), path)
    if strict and conv.unsupported:
        names = ", ".join(f"[{n.section}] {n.key}".strip() for n in conv.unsupported)
        raise PotflowInputError(path, f"keys potflow does not support (--strict): {names}")
    prepare(conv.config, path)
    return conv


_FIELD = re.compile(r"config field '([A-Za-z_]+)\.?([^']*)'")


def prepare(cfg, source):
    """prepare_config, with field names given as FitSNAP's [SECTION] key."""
    try:
        return prepare_config(cfg, source=source)
    except PotflowInputError as exc:
        msg = str(exc)[len(exc.where) + 2 :]
        msg = _FIELD.sub(lambda m: f"[{m.group(1).upper()}] {m.group(2)}".rstrip(), msg, count=1)
        raise PotflowInputError(source, msg) from None


def is_fitsnap_input(path):
    """By suffix (.in/.ini/.cfg) or, for other suffixes, a first line that is a [SECTION]."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in FITSNAP_SUFFIXES:
        return True
    if suffix in YAML_SUFFIXES:
        return False
    try:
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith(("#", ";")):
                    return bool(re.fullmatch(r"\[[A-Za-z_]+\]", line))
    except (OSError, UnicodeDecodeError):
        return False
    return False


def _merge(base, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _stderr(line):
    print(line, file=sys.stderr)


def load_any_config(path, strict=False, overrides=None, report=_stderr):
    """A checked potflow config from a YAML/JSON config or a FitSNAP input file (by suffix).

    For a FitSNAP input, each notice is passed to ``report`` (stderr by default) and
    ``overrides`` (a nested mapping, e.g. Snakemake's other ``--config`` values) are merged over
    the converted settings before the checks.
    """
    path = Path(path)
    if not is_fitsnap_input(path):
        cfg = load_config(path)
        return prepare(_merge(cfg, overrides), path) if overrides else cfg
    conv = read_fitsnap_input(path, strict=strict)
    for notice in conv.notices:
        report(f"potflow: {path}: {notice}")
    return prepare(_merge(conv.config, overrides or {}), path)


def workflow_config(config, report=_stderr):
    """Snakefile hook for ``--config fitsnap_input=INPUT.in``: replace ``config`` in place.

    The FitSNAP input is the whole config (``config.yaml`` is not read); any other ``--config``
    values override its settings.
    """
    overrides = {k: v for k, v in config.items() if k != "fitsnap_input"}
    cfg = load_any_config(config["fitsnap_input"], overrides=overrides, report=report)
    config.clear()
    config.update(cfg)
    return config


def to_yaml(conv):
    """The converted config as commented YAML."""
    lines = [
        f"# potflow config converted by `potflow from-fitsnap` from {conv.source.resolve()}",
        "# Relative paths were resolved against that file's folder (as FitSNAP does).",
    ]
    if conv.defaults:
        lines.append("# Absent from the input, FitSNAP's defaults (which differ from potflow's):")
        lines.append(f"#   {', '.join(conv.defaults)}")
    if conv.notices:
        lines.append("# Not converted:")
        lines += [f"#   {n}" for n in conv.notices]
    body = yaml.safe_dump(conv.config, sort_keys=False, default_flow_style=None, width=100)
    return "\n".join(lines) + "\n" + body
