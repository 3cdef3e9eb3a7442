"""Figures of the properties: energy-volume curves and phonon bands with their DOS."""

import numpy as np
from ase.eos import birchmurnaghan
from ase.units import GPa
from matplotlib.figure import Figure

STYLES = {"model": ("C0", "-"), "reference": ("C3", "--")}


def eos_figure(curves, ref_curves, groups, title, ref_name):
    """One panel per crystal (model and reference potential) and per training EOS group
    (model and DFT energies at the same volumes)."""
    panels = [(c, curves[c], (ref_curves or {}).get(c)) for c in curves] + [
        (g, d, None) for g, d in (groups or {}).items()
    ]
    fig = Figure(figsize=(4.5 * max(len(panels), 1), 3.8), layout="constrained")
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    if not panels:
        axes[0].text(0.5, 0.5, "no equation of state computed (properties.crystals.*.compute)", ha="center")
    for ax, (name, curve, ref) in zip(axes, panels, strict=False):
        if "dft_energies" in curve:  # a training EOS group
            ax.plot(curve["volumes"], curve["dft_energies"], "o", color="k", label="DFT (training data)")
            ax.plot(curve["volumes"], curve["energies"], "x", color="C0", label="model")
        for label, c in (("model", curve), (ref_name, ref)):
            if not c or "v0" not in c:
                continue
            colour, ls = STYLES["model" if label == "model" else "reference"]
            v = np.linspace(min(c["volumes"]), max(c["volumes"]), 100)
            fitted = birchmurnaghan(v, c["e0"], c["B"] * GPa, c["Bp"], c["v0"])
            ax.plot(c["volumes"], c["energies"], "o", color=colour, ms=4)
            ax.plot(v, fitted, ls, color=colour, label=f"{label}: B = {c['B']:.0f} GPa")
        ax.set_xlabel("volume (A^3/atom)")
        ax.set_ylabel("energy (eV/atom)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def phonon_figure(data, ref_data, title, ref_name, imaginary_tolerance=0.1):
    """Bands along the standard path and the total DOS, model beside the reference potential."""
    crystals = list(data)
    fig = Figure(figsize=(8, 3.6 * max(len(crystals), 1)), layout="constrained")
    grid = fig.subplots(max(len(crystals), 1), 2, squeeze=False, width_ratios=[3, 1], sharey="row")
    for (ax, dos_ax), name in zip(grid, crystals, strict=False):
        for label, d in (("model", data[name]), (ref_name, (ref_data or {}).get(name))):
            if not d:
                continue
            colour, ls = STYLES["model" if label == "model" else "reference"]
            bands = np.asarray(d["bands"])
            ax.plot(d["x"], bands, ls, color=colour, lw=1)
            ax.plot([], [], ls, color=colour, label=label)
            dos_ax.plot(d["dos"], d["dos_frequencies"], ls, color=colour, lw=1)
        d = data[name]
        ax.set_xticks(d["ticks"], [t.replace("G", r"$\Gamma$") for t in d["labels"]])
        ax.set_xlim(d["x"][0], d["x"][-1])
        ax.axhline(0, color="grey", lw=0.5)
        for t in d["ticks"]:
            ax.axvline(t, color="grey", lw=0.5)
        stable = "" if d["lowest_frequency"] >= -imaginary_tolerance else " - IMAGINARY MODES"
        ax.set_title(f"{name}{stable}")
        ax.set_ylabel("frequency (THz)")
        ax.legend(fontsize=8)
        dos_ax.set_xlabel("DOS")
    if not crystals:
        grid[0][0].text(0.5, 0.5, "no phonons computed (properties.crystals.*.compute)", ha="center")
    fig.suptitle(title)
    return fig
