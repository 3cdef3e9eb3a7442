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


def fits_stress(cfg):
    """True when stresses are computed, stored and fitted: ``calculator.stress`` is 1 (FitSNAP's
    switch for the virial rows) and some virial weight (group ``vweight``, or the global
    ``pytorch.virial_weight`` overriding them) is above 0."""
    if not cfg["calculator"].get("stress", 0):
        return False
    vw = cfg["pytorch"].get("virial_weight")
    if vw is not None:
        return vw > 0
    groups = cfg["groups"]
    weights = [groups["defaults"].get("vweight", 0.0)]
    weights += [g.get("vweight", 0.0) for g in named_groups(cfg).values()]
    return any(w > 0 for w in weights)


def any_force_weight(cfg):
    """False for an energy-only fit: then no gradient rows are computed or stored."""
    fw = cfg["pytorch"]["force_weight"]
    if fw is not None:
        return fw > 0
    groups = cfg["groups"]
    weights = [groups["defaults"].get("fweight", 1.0)]
    weights += [g.get("fweight", 1.0) for g in named_groups(cfg).values()]
    return any(w > 0 for w in weights)
