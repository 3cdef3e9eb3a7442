"""The leaderboard: every fit's errors, cost and MD checks in one table and one figure.

Columns (``leaderboard.tsv``; ``leaderboard.md`` shows the overall ones and per-group tables):

  rank fit <settings that differ between fits> committee
  {test,train}_{energy,force}_{mae,rmse}     *ALL rows of the metrics file (eV/atom, eV/Angstrom)
  epochs selected_epoch parameters            from model.pt (epochs trained, epoch kept, weights)
  train_wall_s committee_wall_s               Snakemake benchmark of the training job(s), seconds
  md_drift                                    eV/atom/ps (md/summary.json; empty without MD)
  md_max_force_std md_candidates              committee disagreement along the MD run
  <property>[<crystal>]_err_pct properties_missed  relative error of each material property
                                              against its first reference (properties.tsv),
                                              percent; tolerances missed
  <group>:{test,train}_{energy,force}_{mae,rmse}   the same errors per group

Rows are sorted by ``leaderboard.sort_by``, smallest first (``md_drift`` by its size); a fit
with no value there (no forces, no MD) goes last.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from potflow.config.sweeps import setting_text
from potflow.evaluation.error_files import read_metrics
from potflow.evaluation.plots import COLOURS
from potflow.models.files import load_model

ERROR_COLUMNS = [
    f"{side}_{prop}_{stat}"
    for side in ("test", "train")
    for prop in ("force", "energy")
    for stat in ("mae", "rmse")
]


COST_COLUMNS = ["epochs", "selected_epoch", "parameters", "train_wall_s", "committee_wall_s"]


MD_COLUMNS = ["md_drift", "md_max_force_std", "md_candidates"]


def _errors(metrics, group):
    out = {}
    for side, label in (("test", "Test"), ("train", "Train")):
        for prop, name in (("force", "Force"), ("energy", "Energy")):
            row = metrics[(metrics["Group"] == group) & (metrics["Train/Test"] == label) & (metrics["Property"] == name)]
            for stat in ("mae", "rmse"):
                value = float(row[stat.upper()].iloc[0]) if len(row) and row["Count"].iloc[0] > 0 else math.nan
                out[f"{side}_{prop}_{stat}"] = value
    return out


def benchmark_seconds(path):
    """Wall seconds of a job from its Snakemake benchmark file (column ``s``)."""
    return float(pd.read_csv(path, sep="\t")["s"].iloc[0])


def property_errors(path):
    """Relative errors (percent) of a fit's material properties (properties.tsv), one column
    per crystal and property (its first reference), and the count of missed tolerances."""
    table = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
    out = {}
    for _, r in table.iterrows():
        column = f"{r['property']}[{r['crystal']}]_err_pct"
        error = pd.to_numeric(r["relative_error"], errors="coerce")
        if column not in out and np.isfinite(error):
            out[column] = 100 * float(error)
    out["properties_missed"] = int((table["pass"].astype(str) == "False").sum())
    return out


def fit_row(fit, metrics, model, benchmarks=(), md_summary=None, md_committee=None, settings=None, committee=1,
            properties=None):  # fmt: skip
    """One leaderboard row from a fit's files (paths; md_* and properties may be None)."""
    table = read_metrics(metrics)
    net, info = load_model(model)
    # a fit trained outside Snakemake has no benchmark: no time, rather than a wrong one
    seconds = [benchmark_seconds(b) if Path(b).exists() else math.nan for b in benchmarks]
    row = {"fit": fit, **{k: setting_text(v) for k, v in (settings or {}).items()}}
    row["committee"] = int(committee)
    row.update(_errors(table, "*ALL"))
    row.update(
        epochs=info.get("epochs_trained"),
        selected_epoch=info.get("epoch"),
        parameters=sum(p.numel() for p in net.parameters()),
        train_wall_s=seconds[0] if seconds else math.nan,
        committee_wall_s=sum(seconds) if seconds else math.nan,
    )
    md = json.loads(Path(md_summary).read_text()) if md_summary else {}
    mdc = json.loads(Path(md_committee).read_text()) if md_committee else {}
    row.update(
        md_drift=md.get("energy_drift_eV_per_atom_per_ps", math.nan),
        md_max_force_std=mdc.get("max_force_std", math.nan),
        md_candidates=mdc.get("candidates", math.nan),
    )
    if properties:
        row.update(property_errors(properties))
    for group in table["Group"].unique():
        if group != "*ALL":
            row.update({f"{group}:{k}": v for k, v in _errors(table, group).items()})
    return row


def leaderboard_table(rows, sort_by="test_force_mae"):
    """The rows as a DataFrame, ranked by ``sort_by`` (smallest first, missing values last)."""
    table = pd.DataFrame(rows)
    key = (lambda s: s.abs()) if sort_by == "md_drift" else None
    table = table.sort_values(sort_by, key=key, na_position="last", kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def group_columns(table):
    return [c for c in table.columns if ":" in c]


def markdown(table, sort_by):
    """Leaderboard in Markdown: the overall table, then test errors per group."""
    main = table.drop(columns=group_columns(table))
    parts = [
        f"# potflow leaderboard\n\n{len(table)} fits, ranked by `{sort_by}` (smallest first). "
        "Energies in eV/atom, forces in eV/Å (per component), times in seconds, MD drift in "
        "eV/atom/ps.\n",
        main.to_markdown(index=False, floatfmt=".4g"),
    ]
    groups = list(dict.fromkeys(c.split(":")[0] for c in group_columns(table)))
    for stat, title in (("test_force_mae", "Test force MAE per group (eV/Å)"),
                        ("test_energy_mae", "Test energy MAE per group (eV/atom)")):  # fmt: skip
        cols = [f"{g}:{stat}" for g in groups if f"{g}:{stat}" in table]
        if cols:
            sub = table[["fit", *cols]].rename(columns=lambda c: c.split(":")[0])
            parts += [f"\n## {title}\n", sub.to_markdown(index=False, floatfmt=".4g")]
    return "\n".join(parts) + "\n"


def html(table, sort_by):
    body = table.drop(columns=group_columns(table)).to_html(index=False, na_rep="-", float_format=lambda x: f"{x:.4g}", border=0)
    style = "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}th,td{padding:2px 8px;border-bottom:1px solid #ddd}"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>potflow leaderboard</title><style>{style}</style>"
        f"</head><body><h3>Leaderboard, ranked by {sort_by}</h3>{body}</body></html>\n"
    )


def figure(table, sort_by):
    """Test and train force and energy MAE of every fit (bars), in leaderboard order."""
    n = len(table)
    fig = Figure(figsize=(11, 1.2 + 0.35 * n))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(n)
    for ax, prop, unit in ((axes[0], "force", "eV/Å"), (axes[1], "energy", "eV/atom")):
        for k, (side, name) in enumerate((("test", "Test"), ("train", "Train"))):
            values = table[f"{side}_{prop}_mae"].to_numpy(float)
            ax.barh(y + (k - 0.5) * 0.4, np.nan_to_num(values), height=0.4, color=COLOURS[name], label=f"{name} MAE")
        ax.set_xlabel(f"{prop} MAE ({unit})")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, table["fit"])
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=8, frameon=False)
    fig.suptitle(f"{n} fits, best {sort_by} at the top", fontsize=11)
    fig.tight_layout()
    return fig
