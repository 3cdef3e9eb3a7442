"""Figures: each PNG opens and is not blank; train/test colours, legends and log scales are right."""

import matplotlib.colors as mcolors
import matplotlib.image as mpimg
import numpy as np
import pytest

from potflow.errors import PotflowInputError
from potflow.evaluation import plots


def synthetic_evaluation(seed=0, has_forces=True):
    """An evaluation of 3 groups, 40 configurations, with train, validation and test labels."""
    rng = np.random.default_rng(seed)
    m = 40
    natoms = rng.integers(2, 20, m)
    a = natoms.sum()
    truth_e = rng.normal(-10, 1, m) * natoms
    truth_f = rng.normal(0, 1, (a, 3))
    return {
        "groups": np.array(["Bulk", "Surface", "Liquid"]),
        "group": rng.integers(0, 3, m).astype(np.int32),
        "index": np.arange(m),
        "filename": np.array([f"c{i}.json" for i in range(m)]),
        "natoms": natoms,
        "set": np.array(["train", "val", "test", "train"] * (m // 4)),
        "eshift": np.zeros(m),
        "energy_truth": truth_e,
        "energy_pred": truth_e + rng.normal(0, 0.05, m) * natoms,
        "types": np.zeros(a, np.int32),
        "force_truth": truth_f,
        "force_pred": truth_f + rng.normal(0, 0.1, (a, 3)),
        "atom_energy_pred": np.zeros(a),
        "has_forces": np.array(has_forces),
        "has_stress": np.array(True),
        "stress_truth": (truth_s := rng.normal(0, 5000.0, (m, 6))),
        "stress_pred": truth_s + rng.normal(0, 300.0, (m, 6)),
        "info": np.array("{}"),
    }


def assert_not_blank(png, data=True):
    """The PNG opens, is not one flat colour, and (``data``) shows coloured marks, not empty axes."""
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    rgb = img[..., :3].reshape(-1, 3)
    grey = rgb.mean(axis=1)
    assert grey.var() > 5e-3, f"{png} looks blank"
    if data:  # empty axes (frame, ticks, text) have no saturated pixels at all
        saturated = mcolors.rgb_to_hsv(np.clip(rgb, 0, 1))[:, 1] > 0.3
        assert saturated.mean() > 5e-4, f"{png} has axes but no data drawn"
    return rgb


def has_colour(rgb, colour, tol=0.03):
    """Enough pixels of this hue (points are drawn half transparent, so compare hues)."""
    hsv = mcolors.rgb_to_hsv(np.clip(rgb, 0, 1))
    hue = mcolors.rgb_to_hsv(np.array(mcolors.to_rgb(colour)))[0]
    near = np.abs((hsv[:, 0] - hue + 0.5) % 1.0 - 0.5) < tol
    return (near & (hsv[:, 1] > 0.3)).sum() > 20


def test_every_figure_is_written_as_png_and_pdf_and_is_not_blank(tmp_path):
    ev = synthetic_evaluation()
    figures = plots.evaluation_figures(ev, "fit x")
    assert list(figures) == list(plots.FIGURES)
    loss = np.array([[e, 10.0 / e, 12.0 / e] for e in range(1, 40)])
    figures["loss_curves"] = plots.loss_curves(loss, "fit x")
    for name, fig in figures.items():
        png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
        plots.save_figure(fig, png, pdf)
        rgb = assert_not_blank(png)
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000
        if name != "loss_curves":  # train and test both drawn, in their own colours
            assert has_colour(rgb, plots.COLOURS["Train"]), name
            assert has_colour(rgb, plots.COLOURS["Test"]), name
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_parity_legends_give_mae_and_rmse_of_each_side():
    ev = synthetic_evaluation()
    fig = plots.energy_parity(ev)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    test = ev["set"] == "test"
    err = (ev["energy_pred"] - ev["energy_truth"]) / ev["natoms"]
    for label, sel in (("Train", ~test), ("Test", test)):
        mae, rmse = np.abs(err[sel]).mean(), np.sqrt((err[sel] ** 2).mean())
        assert f"{label} ({sel.sum()} configs): MAE {mae:.3g}, RMSE {rmse:.3g} eV/atom" in texts
    colours = {tuple(c.get_facecolor()[0][:3]) for c in fig.axes[0].collections}
    assert len(colours) == 2
    ftexts = [t.get_text() for t in plots.force_parity(ev).axes[0].get_legend().get_texts()]
    n_test_components = 3 * ev["natoms"][test].sum()
    assert any(t.startswith(f"Test ({n_test_components} components): MAE") for t in ftexts)


def test_group_error_bars_match_the_metrics():
    ev = synthetic_evaluation()
    fig = plots.group_errors(ev)
    energy_ax, force_ax = fig.axes[:2]
    labels = [t.get_text() for t in energy_ax.get_yticklabels()]
    assert labels == ["*ALL", "Bulk", "Surface", "Liquid"]
    from potflow.evaluation.error_files import metrics_table

    table = metrics_table(ev)
    want = table[(table["Property"] == "Force") & (table["Train/Test"] == "Test")]["MAE"].to_numpy()
    bars = [p for p in force_ax.patches if mcolors.to_hex(p.get_facecolor()) == plots.COLOURS["Test"].lower()]
    np.testing.assert_allclose([b.get_width() for b in bars], want)


def test_loss_curves_are_log_scale_and_read_fitsnap_tables(tmp_path):
    plain = tmp_path / "loss_vs_epochs.dat"
    plain.write_text("".join(f"{e} {1.0 / e} {2.0 / e}\n" for e in range(1, 6)))
    headed = tmp_path / "headed.dat"
    headed.write_text("epoch train val\n" + plain.read_text())
    np.testing.assert_array_equal(plots.read_loss(plain), plots.read_loss(headed))
    loss = plots.read_loss(plain)
    assert loss.shape == (5, 3)
    ax = plots.loss_curves(loss).axes[0]
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.get_lines()] == ["Train loss", "Validation loss"]
    no_val = tmp_path / "noval.dat"
    no_val.write_text("".join(f"{e} {1.0 / e} nan\n" for e in range(1, 6)))
    assert [line.get_label() for line in plots.loss_curves(plots.read_loss(no_val)).axes[0].get_lines()] == ["Train loss"]
    bad = tmp_path / "bad.dat"
    bad.write_text("1 0.5 0.6\n2 oops 0.4\n")
    with pytest.raises(PotflowInputError, match="bad.dat"):
        plots.read_loss(bad)


def test_blank_check_catches_empty_axes(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5.5))
    fig.add_subplot().set_title("nothing here")
    plots.save_figure(fig, tmp_path / "empty.png")
    with pytest.raises(AssertionError, match="no data"):
        assert_not_blank(tmp_path / "empty.png")
    plots.save_figure(Figure(), tmp_path / "white.png")
    with pytest.raises(AssertionError, match="blank"):
        assert_not_blank(tmp_path / "white.png")


def test_energy_only_fit_still_gives_readable_figures(tmp_path):
    ev = synthetic_evaluation(has_forces=False)
    for name, fig in plots.evaluation_figures(ev).items():
        plots.save_figure(fig, tmp_path / f"{name}.png")
        assert_not_blank(tmp_path / f"{name}.png", data=name in ("energy_parity", "group_errors"))
