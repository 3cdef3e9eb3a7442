"""The properties table: each computed property beside its references, errors and tolerance.

Columns of ``properties.tsv``: crystal, property, unit, model, reference, reference_source,
absolute_error (model - reference), relative_error (of the reference), tolerance (relative,
or a bound for the checks that need no reference), pass, and with a committee
committee_std (the property's standard deviation over the members).
"""

import math
import re

import numpy as np
import pandas as pd

COLUMNS = [
    "crystal", "property", "unit", "model", "reference", "reference_source",
    "absolute_error", "relative_error", "tolerance", "pass",
]  # fmt: skip

# Checks that need no reference: property -> (config key, pass rule)
BOUNDS = {
    "elastic_nonlinearity": ("nonlinearity_tolerance", lambda v, t: v <= t),
    "phonon_lowest_frequency": ("imaginary_tolerance", lambda v, t: v >= -t),
}


def tolerance_key(prop):
    """The ``properties.tolerance`` key of a property (C12 -> elastic_constants, ...)."""
    if prop.startswith("lattice_constant"):
        return "lattice_constant"
    if re.fullmatch(r"C\d\d", prop):
        return "elastic_constants"
    if prop == "bulk_modulus_from_elastic":
        return "bulk_modulus"
    for prefix in ("interstitial_formation_energy", "surface_energy", "eos_energy_rmse"):
        if prop.startswith(prefix):
            return prefix
    return prop


def _line(crystal, r, reference=math.nan, source="", tolerance=math.nan):
    value = r["value"]
    line = dict.fromkeys(COLUMNS, "")
    line.update(crystal=crystal, property=r["property"], unit=r["unit"], model=value)
    line.update(reference=reference, reference_source=source, tolerance=tolerance)
    line.update(absolute_error=math.nan, relative_error=math.nan)
    if np.isfinite(reference):
        line["absolute_error"] = value - reference
        line["relative_error"] = (value - reference) / abs(reference) if reference else math.nan
        if np.isfinite(tolerance):
            if r["property"].startswith("eos_energy_rmse"):
                line["pass"] = abs(value - reference) <= tolerance
            else:
                line["pass"] = abs(line["relative_error"]) <= tolerance
    return line


def property_rows(props, cfg, reference_results=None, eos_groups=None, members=()):
    """The table (a DataFrame) from {crystal: [rows]} of the model, of the reference potential and
    of the committee members, the config's reference values and the training EOS groups."""
    pcfg = cfg["properties"]
    ref_name = (pcfg.get("reference_potential") or {}).get("name", "reference potential")
    lines = []
    for crystal, rows in props.items():
        spec = pcfg["crystals"].get(crystal, {})
        ref_rows = {r["property"]: r["value"] for r in (reference_results or {}).get(crystal, [])}
        values = {r["property"]: r["value"] for r in rows}
        for r in rows:
            prop = r["property"]
            tol = pcfg["tolerance"].get(tolerance_key(prop), math.nan)
            refs = []
            if prop in spec.get("reference", {}):
                given = spec["reference"][prop]
                refs.append((given["value"], given.get("source", "config")))
            if prop in ref_rows:
                refs.append((ref_rows[prop], ref_name))
            if prop == "bulk_modulus_from_elastic" and "bulk_modulus" in values:
                refs.append((values["bulk_modulus"], "equation of state (same potential)"))
            if prop in BOUNDS:
                key, rule = BOUNDS[prop]
                line = _line(crystal, r, tolerance=pcfg[key])
                line["pass"] = rule(r["value"], pcfg[key])
                if prop in ref_rows:
                    line.update(reference=ref_rows[prop], reference_source=ref_name)
                lines.append(line)
                continue
            if not refs:
                lines.append(_line(crystal, r))
            for value, source in refs:
                lines.append(_line(crystal, r, value, source, tol))
    for group, rows in (eos_groups or {}).items():
        for r, ref in rows:
            tol = pcfg["tolerance"].get(tolerance_key(r["property"]), math.nan)
            lines.append(_line(group, r, ref, f"training data ({group})", tol))
    table = pd.DataFrame(lines, columns=COLUMNS)
    if members:
        table["committee_std"] = [
            _spread([m.get(c, {}) for m in members], c, p, v)
            for c, p, v in zip(table["crystal"], table["property"], table["model"], strict=True)
        ]
    return table


def _spread(member_rows, crystal, prop, value):
    vals = [value] + [r["value"] for rows in member_rows for r in rows if r["property"] == prop]
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan


def missed(table):
    """The rows that miss their tolerance, as one line each."""
    out = []
    for _, r in table[table["pass"].apply(lambda p: p is False or p is np.False_)].iterrows():
        ref = f" against {r['reference']:.4g} ({r['reference_source']})" if r["reference_source"] else ""
        out.append(f"{r['crystal']} {r['property']}: {r['model']:.4g} {r['unit']}{ref}, tolerance {r['tolerance']:g}")
    return out


def text_table(table):
    """A plain-text view of the table (logs, the bench script)."""
    shown = table.copy()
    for col in ("model", "reference", "absolute_error"):
        shown[col] = shown[col].map(lambda v: "" if v == "" or not np.isfinite(v) else f"{v:.4g}")
    shown["relative_error"] = shown["relative_error"].map(
        lambda v: "" if v == "" or not np.isfinite(v) else f"{100 * v:+.1f} %"
    )
    keep = ["crystal", "property", "unit", "model", "reference", "relative_error", "reference_source", "pass"]
    if "committee_std" in shown:
        keep.append("committee_std")
    return shown[keep].to_string(index=False)


def html(table, title):
    """The table as an HTML page for the report; rows that miss their tolerance in red."""

    def colour(row):
        bad = row["pass"] is False or row["pass"] is np.False_
        return ["background-color: #f8d0d0" if bad else ""] * len(row)

    styled = table.style.set_uuid("properties")  # the same HTML for the same table
    body = styled.apply(colour, axis=1).format(precision=4, na_rep="").hide(axis="index").to_html()
    style = "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}th,td{padding:2px 8px;border-bottom:1px solid #ddd}"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>"
        f"<body><h3>{title}</h3>{body}</body></html>\n"
    )
