"""What a group's descriptor files depend on, and the key (a hash) that names them."""

from potflow.config.groups import named_groups
from potflow.hashing import settings_hash

# Settings that change the descriptor files; the descriptor key is their hash.
DESCRIPTOR_KEYS = (
    "twojmax", "rcutfac", "rfac0", "rmin0", "wj", "radelem", "type", "wselfallflag",
    "chemflag", "bzeroflag", "switchflag", "bnormflag",
)  # fmt: skip


def descriptor_settings(cfg):
    """Everything the descriptor files depend on (bispectrum, reference, storage)."""
    bis = cfg["bispectrum"]
    settings = {
        "bispectrum": {k: bis[k] for k in DESCRIPTOR_KEYS},
        "reference": cfg["reference"],
        "gradient_dtype": cfg["descriptors"]["gradient_dtype"],
        "forces": bool(cfg["calculator"]["force"]) and any_force_weight(cfg),
    }
    if fits_stress(cfg):  # only then: the folders (and keys) of fits without stresses stay as they were
        settings["stress"] = True
    return settings


def descriptor_key(cfg):
    return settings_hash(descriptor_settings(cfg))


def _any_weight(cfg, global_key, group_key, default):
    """Whether some weight is above 0: the global ``pytorch`` one when it is set (it overrides
    the groups, FitSNAP's rule), else the group defaults' or any named group's."""
    value = cfg["pytorch"].get(global_key)
    if value is not None:
        return value > 0
    groups = cfg["groups"]
    weights = [groups["defaults"].get(group_key, default)]
    weights += [g.get(group_key, default) for g in named_groups(cfg).values()]
    return any(w > 0 for w in weights)


def fits_stress(cfg):
    """True when stresses are computed, stored and fitted: ``calculator.stress`` is 1 (FitSNAP's
    switch for the virial rows) and some virial weight (group ``vweight``, or the global
    ``pytorch.virial_weight`` overriding them) is above 0."""
    return bool(cfg["calculator"].get("stress", 0)) and _any_weight(cfg, "virial_weight", "vweight", 0.0)


def any_force_weight(cfg):
    """False for an energy-only fit: then no gradient rows are computed or stored."""
    return _any_weight(cfg, "force_weight", "fweight", 1.0)
