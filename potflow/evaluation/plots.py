"""Figures of a fit: parity plots, per-group errors, loss curves, force-error histogram.

Every function takes an evaluation (potflow.evaluation.predictions.load_evaluation) or a loss table and
returns a matplotlib Figure built without pyplot (no display, no global state);
``save_figure`` writes it as PNG and PDF atomically.
"""

import math

import numpy as np
from matplotlib.figure import Figure

from potflow.errors import PotflowInputError
from potflow.evaluation.error_files import metrics_table
from potflow.evaluation.predictions import evaluates_stress, testing_bool
from potflow.fileio import atomic_path
from potflow.workflow.layout import EVALUATION_FIGURES

# Train and test in distinct, colour-blind-safe colours (Okabe-Ito blue and orange).
COLOURS = {"Train": "#0072B2", "Test": "#D55E00", "Validation": "#009E73"}
# the figures of an evaluation, in the order evaluation_figures draws them (the layout names them)
FIGURES = EVALUATION_FIGURES


def save_figure(fig, png, pdf=None, dpi=150):
    for path, kw in ((png, {"dpi": dpi}), (pdf, {})):
        if path is None:
            continue
        fmt = str(path).rsplit(".", 1)[-1]
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight", **kw)


def _label(name, err, unit, noun):
    """Legend entry: how many, MAE and RMSE."""
    if err.size == 0:
        return f"{name}: none"
    mae = np.mean(np.abs(err))
    rmse = np.sqrt(np.mean(err**2))
    return f"{name} ({err.size} {noun}): MAE {mae:.3g}, RMSE {rmse:.3g} {unit}"


def _parity(ax, truth, pred, testing, unit, what, noun):
    lo = min(truth.min(initial=np.inf), pred.min(initial=np.inf))
    hi = max(truth.max(initial=-np.inf), pred.max(initial=-np.inf))
    if not np.isfinite(lo):
        lo, hi = 0.0, 1.0
    pad = 0.03 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=0.8, zorder=0)
    for name, sel in (("Train", ~testing), ("Test", testing)):
        if sel.any():
            err = pred[sel] - truth[sel]
            ax.scatter(truth[sel], pred[sel], s=6, alpha=0.6, color=COLOURS[name], lw=0, label=_label(name, err, unit, noun))
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"{what} truth ({unit})")
    ax.set_ylabel(f"{what} predicted ({unit})")
    ax.legend(loc="upper left", fontsize=8, markerscale=2, frameon=False)


def energy_parity(ev, title=""):
    """Predicted vs true energy per atom, train and test."""
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    natoms = ev["natoms"]
    _parity(ax, ev["energy_truth"] / natoms, ev["energy_pred"] / natoms, testing_bool(ev), "eV/atom", "Energy", "configs")
    ax.set_title(f"{title} energy per atom".strip())
    return fig


def force_parity(ev, title=""):
    """Predicted vs true force components, train and test."""
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    testing = np.repeat(np.repeat(testing_bool(ev), ev["natoms"]), 3)
    if bool(ev["has_forces"]):
        _parity(ax, ev["force_truth"].ravel(), ev["force_pred"].ravel(), testing, "eV/Å", "Force component", "components")
    else:
        ax.text(0.5, 0.5, "no forces in this fit", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"{title} force components".strip())
    return fig


def stress_parity(ev, title=""):
    """Predicted vs true stress components (bar), train and test."""
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    if evaluates_stress(ev):
        has_truth = np.isfinite(ev["stress_truth"]).all(axis=1)
        testing = np.repeat(testing_bool(ev)[has_truth], 6)
        truth, pred = ev["stress_truth"][has_truth].ravel(), ev["stress_pred"][has_truth].ravel()
        _parity(ax, truth, pred, testing, "bar", "Stress component", "components")
    else:
        ax.text(0.5, 0.5, "no stresses in this fit (calculator.stress 0 or every vweight 0)",
                ha="center", va="center", transform=ax.transAxes)  # fmt: skip
    ax.set_title(f"{title} stress components".strip())
    return fig


def group_errors(ev, title=""):
    """Per-group MAE bars (RMSE as a marker), energy and force, train vs test."""
    table = metrics_table(ev)
    groups = list(table["Group"].unique())
    fig = Figure(figsize=(11, 1.5 + 0.32 * len(groups)))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(groups))
    h = 0.38
    for ax, prop, unit in zip(axes, ("Energy", "Force"), ("eV/atom", "eV/Å"), strict=True):
        for k, split in enumerate(("Train", "Test")):
            rows = table[(table["Property"] == prop) & (table["Train/Test"] == split)].set_index("Group")
            mae = rows.loc[groups, "MAE"].to_numpy(float)
            rmse = rows.loc[groups, "RMSE"].to_numpy(float)
            pos = y + (k - 0.5) * h
            ax.barh(pos, np.nan_to_num(mae), height=h, color=COLOURS[split], label=f"{split} MAE")
            ax.plot(rmse, pos, "|", color="black", ms=7, label="RMSE" if k else None)
        ax.set_xlabel(f"{prop} error ({unit})")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, groups, fontsize=8)
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=8, frameon=False, loc="lower right")
    fig.suptitle(f"{title} errors per group".strip())
    return fig


def force_error_histogram(ev, title=""):
    """Histogram of |force component error| on log-spaced bins, train vs test."""
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    if bool(ev["has_forces"]):
        err = np.abs(ev["force_pred"] - ev["force_truth"]).ravel()
        testing = np.repeat(np.repeat(testing_bool(ev), ev["natoms"]), 3)
        positive = err[err > 0]
        hi = math.log10(positive.max()) if positive.size else 0.0
        # six decades below the largest error: smaller ones (round-off) share the first bin
        lo = max(math.log10(positive.min()), hi - 6) if positive.size else hi - 6
        bins = np.logspace(lo, max(hi, lo + 1e-3), 50)
        for name, sel in (("Train", ~testing), ("Test", testing)):
            if sel.any():
                e = np.clip(err[sel], bins[0], None)
                ax.hist(e, bins=bins, histtype="step", lw=1.5, color=COLOURS[name], label=_label(name, err[sel], "eV/Å", "components"))
        ax.set_xscale("log")
        ax.legend(fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no forces in this fit", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("|force component error| (eV/Å)")
    ax.set_ylabel("components")
    ax.set_title(f"{title} force errors".strip())
    return fig


def read_loss(path):
    """(epoch, train, val) columns of loss_vs_epochs.dat; a header line, if any, is skipped."""
    rows = []
    with open(path) as fh:
        for line in fh:
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            try:
                rows.append([float(w) for w in words[:3]])
            except ValueError:
                if rows:  # words after numbers: not a header
                    raise PotflowInputError(path, f"not a number in line {line.strip()!r}") from None
    if not rows or any(len(r) < 2 for r in rows):
        raise PotflowInputError(path, "no 'epoch train [val]' rows")
    width = max(len(r) for r in rows)
    return np.array([r + [np.nan] * (width - len(r)) for r in rows])


def loss_curves(loss, title=""):
    """Train and validation loss per epoch, log scale."""
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    epoch = loss[:, 0]
    series = [("Train", loss[:, 1])]
    if loss.shape[1] > 2 and np.isfinite(loss[:, 2]).any():
        series.append(("Validation", loss[:, 2]))
    for name, y in series:
        ax.plot(epoch, y, marker="o" if len(epoch) < 30 else None, ms=3, color=COLOURS[name], label=f"{name} loss")
    positive = np.concatenate([y[np.isfinite(y) & (y > 0)] for _, y in series])
    if positive.size:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False)
    ax.set_title(f"{title} loss".strip())
    return fig


def evaluation_figures(ev, title=""):
    """name -> Figure for every figure of an evaluation (FIGURES order)."""
    makers = (energy_parity, force_parity, group_errors, force_error_histogram, stress_parity)
    return {name: make(ev, title) for name, make in zip(FIGURES, makers, strict=True)}
