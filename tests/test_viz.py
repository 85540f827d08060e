"""Figures and tables of udalib.viz: values checked where the function computes any."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from udalib.data import SegmentationList  # noqa: E402
from udalib.data.labels import CITYSCAPES_PALETTE  # noqa: E402
from udalib.eval.metrics import Scores  # noqa: E402
from udalib.losses import entropy_loss, maxsquare_loss  # noqa: E402
from udalib.viz import plots  # noqa: E402


def test_gradient_magnitudes_are_the_closed_forms_of_the_library_losses():
    p = np.array([0.6, 0.9, 0.99])
    g = plots.gradient_magnitudes({"entropy": entropy_loss, "maxsquare": maxsquare_loss}, p)
    # entropy (seed normalisation: / C = 2): |dH/dp| / 2 = log(p / (1 - p)) / 2
    assert np.allclose(g["entropy"], np.log(p / (1 - p)) / 2)
    # max-square (seed: -1/2 mean over C = 2 entries): |d/dp| = (2p - 1) / 2
    assert np.allclose(g["maxsquare"], (2 * p - 1) / 2)


def test_class_frequencies_and_mean_colours_on_a_known_dataset(tiny_minicity):
    ds = SegmentationList(tiny_minicity, "lists/source_val.txt")
    counts = np.zeros(256)
    for i in range(len(ds)):
        counts += np.bincount(ds.load(i)[1].ravel(), minlength=256)
    freq = plots.class_frequencies({"s": ds}, [0, 10])
    assert freq.loc["road", "s"] == pytest.approx(round(100 * counts[0] / counts[:255].sum(), 2))
    colours = plots.class_mean_colours({"s": ds}, [10])
    sky = np.concatenate([ds.load(i)[0][ds.load(i)[1] == 10] for i in range(len(ds))]).mean(0)
    assert np.allclose(colours["s"][0], sky)


def test_iou_bars_draw_one_bar_per_present_class_and_result_at_its_value():
    names = ["road", "sidewalk", "wall"]
    a = Scores([50.0, 20.0, math.nan], 35.0, 90.0, 40.0, names)
    b = Scores([60.0, 10.0, math.nan], 35.0, 90.0, 40.0, names)
    fig = plots.iou_bars({"a": a, "b": b})
    heights = sorted(round(p.get_height(), 3) for p in fig.axes[0].patches if p.get_height() > 0)
    assert heights == [10.0, 20.0, 50.0, 60.0]  # 'wall' (NaN everywhere) is left out


def test_show_predictions_and_entropy_run_on_a_small_model(tiny_minicity):
    import torch

    from udalib.models import build_model

    ds = SegmentationList(tiny_minicity, "lists/target_val.txt")
    model = build_model("minideeplab", 19, width=4).train()
    fig = plots.show_predictions({"m": model}, ds, [0, 1])
    assert len(fig.axes) >= 6
    assert model.training  # restored
    fig = plots.show_entropy(model, ds, [0])
    assert torch.is_grad_enabled()


def test_style_vectors_and_domain_separability():
    import torch

    f = torch.zeros(2, 2, 2, 2)
    f[0, 0] = torch.tensor([[1.0, 3.0], [1.0, 3.0]])  # mean 2, std (unbiased) 2/sqrt(3)
    f[1, 1] = 5.0
    s = plots.style_vectors(f)
    assert np.allclose(s, [[2, 0, 2 / math.sqrt(3), 0], [0, 5, 0, 0]])
    rng = np.random.default_rng(0)
    apart = {"a": rng.normal(0, 1, (20, 3)), "b": rng.normal(10, 1, (20, 3))}
    assert plots.domain_separability(apart) == 100.0
    # constant statistics (what instance normalization leaves) carry nothing: chance
    same = {"a": np.ones((5, 3)), "b": np.ones((5, 3)), "c": np.ones((5, 3))}
    assert plots.domain_separability(same) == pytest.approx(100 / 3)
    # one odd point among two tight clusters is misassigned, by the leave-one-out centroids
    mixed = {"a": np.array([[0.0], [0.1], [10.0]]), "b": np.array([[9.9], [10.1], [10.0]])}
    assert plots.domain_separability(mixed) == pytest.approx(100 * 5 / 6)
    fig = plots.style_scatter({"panel": apart})
    assert "100%" in fig.axes[0].get_title()


def _run(name, scores, adabn=False):
    from udalib.experiment import Experiment, Run

    def s(m):
        return Scores(iou=[m, float("nan")], miou=m, pixel_acc=0.0, mean_acc=0.0, class_names=["road", "sidewalk"])
    return Run(dir=__import__("pathlib").Path(name), config=Experiment(adabn=adabn),
               scores={k: s(v) for k, v in scores.items()})


def test_compare_runs_differences_and_target_bn_only_where_it_exists():
    from udalib.experiment import TARGET_BN, compare_runs, per_class_iou

    t, src = "minicity:target/val", "minicity:source/val"
    source = _run("s", {t: 30.0, src: 60.0})  # never saw a target image: no target-BN score
    adabn = _run("a", {t: 38.0, src: 53.0}, adabn=True)  # its statistics are the target's: both equal
    control = _run("c", {t: 33.0, t + TARGET_BN: 38.5, src: 61.0})
    method = _run("m", {t: 36.0, t + TARGET_BN: 41.0, src: 60.5})
    table = compare_runs({"source": source, "AdaBN": adabn, "control": control, "method": method},
                         baseline=source, control=control)
    assert np.isnan(table.loc["source", "target mIoU, target BN"])
    assert table.loc["AdaBN", "target mIoU, target BN"] == 38.0
    assert table.loc["method", "vs source-only"] == pytest.approx(6.0)
    assert table.loc["method", "vs control"] == pytest.approx(3.0)
    assert table.loc["method", "vs control, target BN"] == pytest.approx(2.5)
    assert table.loc["control", "source mIoU"] == 61.0
    # runs that kept target-only statistics carry no target-BN score: no such column, no difference on it
    control, method = _run("c", {t: 33.0, src: 61.0}), _run("m", {t: 36.0, src: 60.5})
    table = compare_runs({"source": source, "AdaBN": adabn, "control": control, "method": method},
                         baseline=source, control=control)
    assert list(table.columns) == ["target mIoU", "source mIoU", "vs source-only", "vs control"]
    assert table.loc["method", "vs control"] == pytest.approx(3.0)
    iou = per_class_iou({"source": source, "method": method}, t)
    assert list(iou.index) == ["road"] and iou.loc["road", "method"] == 36.0  # the all-NaN class is dropped


# ------------------------------------------------------------------------------ comparing runs (notebook 11)
def test_overlay_blends_labels_and_highlights_one_class():
    image = np.array([[[100, 100, 100], [0, 0, 0], [200, 100, 0]]], dtype=np.uint8)  # (1, 3, 3)
    label = np.array([[0, 255, 10]])
    road, sky = np.array(CITYSCAPES_PALETTE[0]), np.array(CITYSCAPES_PALETTE[10])
    out = plots.overlay(image, label, 0.25)
    assert np.array_equal(out[0, 0], np.round(0.75 * 100 + 0.25 * road))
    assert np.array_equal(out[0, 1], [0, 0, 0])  # unlabelled: the image itself
    assert np.array_equal(out[0, 2], np.round(0.75 * np.array([200, 100, 0]) + 0.25 * sky))
    lit = plots.overlay(image, label, 1.0, highlight=10)
    assert np.array_equal(lit[0, 2], sky)
    assert np.array_equal(lit[0, 0], [50, 50, 50])  # other classes: grey at half brightness
    with pytest.raises(ValueError, match="opacity"):
        plots.overlay(image, label, 1.5)
    with pytest.raises(ValueError, match="same height and width"):
        plots.overlay(image, label[:, :2], 0.5)


def test_error_overlay_share_is_pixel_error_or_one_minus_class_iou():
    image = np.full((1, 5, 3), 200, np.uint8)
    label = np.array([[0, 0, 1, 1, 255]])
    pred = np.array([[0, 1, 1, 0, 3]])
    picture, share = plots.error_overlay(image, label, pred)
    assert share == pytest.approx(50.0)  # 2 of 4 labelled pixels wrong; the unlabelled one is not counted
    assert np.array_equal(picture[0, 1], [255, 0, 0]) and np.array_equal(picture[0, 0], [100, 100, 100])
    assert np.array_equal(picture[0, 4], [100, 100, 100])
    _, share0 = plots.error_overlay(image, label, pred, highlight=0)
    assert share0 == pytest.approx(100 * (1 - 1 / 3))  # road: intersection 1, union 3
    _, none = plots.error_overlay(image, label, pred, highlight=7)
    assert math.isnan(none)


def test_compare_predictions_lays_out_panels_and_error_titles():
    image = np.zeros((2, 2, 3), np.uint8)
    label = np.array([[0, 0], [10, 255]])
    fig = plots.compare_predictions(image, label, {"a": np.zeros((2, 2), int), "b": np.full((2, 2), 10)}, alpha=1.0,
                                    errors=True, class_ids=[0, 10])
    assert len(fig.axes) == 8
    assert [ax.get_title() for ax in fig.axes[:4]] == ["image", "ground truth", "a", "b"]
    assert fig.axes[6].get_title() == "errors 33.3%" and fig.axes[7].get_title() == "errors 66.7%"
    assert (np.asarray(fig.axes[3].images[0].get_array()) == CITYSCAPES_PALETTE[10]).all()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["road", "sky"]


def test_entropy_maps_title_the_mean():
    fig = plots.entropy_maps(np.zeros((2, 2, 3), np.uint8), {"m": np.array([[0.0, 1.0], [0.5, 0.5]])})
    assert fig.axes[1].get_title() == "m\nmean 0.50"


def test_confusion_matrix_plot_shows_row_percentages_of_present_classes():
    cm = np.zeros((19, 19))
    cm[0, 0], cm[0, 1], cm[1, 1], cm[10, 0] = 3, 1, 2, 4  # only road, sidewalk, sky occur
    fig = plots.confusion_matrix_plot(cm)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["road", "sidewalk", "sky"]
    values = np.asarray(ax.collections[0].get_array()).reshape(3, 3)
    assert np.allclose(values, [[75, 25, 0], [0, 100, 0], [100, 0, 0]])
    with pytest.raises(ValueError, match="one row per class"):
        plots.confusion_matrix_plot(np.zeros((3, 3)))


def test_iou_heatmap_and_bars_show_the_table_values():
    import pandas as pd

    table = pd.DataFrame({"road": [50.0, 70.0], "sky": [np.nan, 30.0]}, index=["a", "b"])
    fig = plots.iou_heatmap(table)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["30.0", "50.0", "70.0"]  # NaN stays blank
    long = pd.DataFrame({"name": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1], "class": ["road"] * 4,
                         "IoU": [40.0, 60.0, 10.0, 30.0]})
    fig = plots.class_iou_bars(long, order=["b", "a"])
    assert sorted(round(p.get_height(), 3) for p in fig.axes[0].patches if p.get_height() > 0) == [20.0, 50.0]


def test_reported_per_class_rows_average_to_their_reported_miou():
    from udalib import results
    from udalib.data.labels import CITYSCAPES_CLASSES

    table = results.reported_table()
    assert table.loc["maxsquare_iw_multi", "mIoU"] == 46.4 and table.loc["source_only", "road"] == 75.8
    per_class = table[list(CITYSCAPES_CLASSES)].dropna()
    assert set(per_class.index) == {"source_only", "adaptsegnet_multi", "maxsquare_iw_multi", "cbst", "mlsl"}
    # a transcription check: the published per-class values average to the published mIoU (MLSL's to 48.9)
    assert np.allclose(per_class.mean(axis=1), table.loc[per_class.index, "mIoU"], atol=0.15)


def test_show_samples_keeps_each_class_colour_in_the_13_class_set(tiny_minicity):
    from udalib.data import SegmentationList
    from udalib.data.minicity import POLE

    full = SegmentationList(tiny_minicity, "lists/rome_val.txt")
    thirteen = SegmentationList(tiny_minicity, "lists/rome_val.txt", class_set="13")
    n = len(full)  # every image: the second row of panels holds the labels
    drawn = [np.stack([np.asarray(ax.images[0].get_array()) for ax in plots.show_samples({"x": ds}, n=n).axes[n:]])
             for ds in (full, thirteen)]
    label = np.stack([full.load(i)[1] for i in range(n)])
    keep = label != POLE  # not in the 13 classes: ignore (black) there
    assert keep.mean() > 0.9 and (~keep).any()
    assert np.array_equal(drawn[0][keep], drawn[1][keep])
    assert (drawn[1][~keep] == 0).all() and not (drawn[0][~keep] == 0).all()


def test_show_source_displays_each_call_and_returns_none(monkeypatch):
    import IPython.display

    from udalib.viz import show_source, source_text

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    assert show_source(entropy_loss) is None
    assert show_source(maxsquare_loss) is None
    assert [type(c).__name__ for c in shown] == ["Code", "Code"]  # two calls in one cell: both displayed
    assert shown[0].data == source_text(entropy_loss)
    assert source_text(maxsquare_loss).startswith("def maxsquare_loss(")


def test_training_curves_draw_a_reference_line_only_on_its_panel():
    import math

    import pandas as pd

    from udalib.viz.plots import training_curves

    runs = {"a": pd.DataFrame({"step": [1, 2], "d_out": [0.7, 0.5], "seg": [1.0, 0.8]})}
    fig = training_curves(runs, keys=("seg", "d_out"), reference={"d_out": (math.log(2), "chance (log 2)")})
    seg, d_out = fig.axes
    lines = {line.get_label(): line for line in d_out.get_lines()}
    assert list(lines["chance (log 2)"].get_ydata()) == [math.log(2), math.log(2)]
    assert [line.get_label() for line in seg.get_lines()] == ["a"]


def test_iou_heatmap_fits_its_colour_scale_to_the_data_and_caps_a_diverging_one():
    import pandas as pd

    table = pd.DataFrame({"road": [50.0, 70.0], "sky": [np.nan, 30.0]}, index=["rome", "tokyo"])
    mesh = plots.iou_heatmap(table).axes[0].collections[0]
    assert mesh.get_clim() == (30.0, 70.0)  # smallest to largest value, not 0 to 100
    assert plots.iou_heatmap(table, limits=(0, 100)).axes[0].collections[0].get_clim() == (0.0, 100.0)
    ax = plots.iou_heatmap(table).axes[0]
    assert [t.get_rotation() for t in ax.get_yticklabels()] == [0.0, 0.0]  # row names read side by side
    change = pd.DataFrame({"road": [57.8, -1.5], "sky": [0.5, 2.0]}, index=["vs source-only", "vs control"])
    assert plots.iou_heatmap(change, center=0).axes[0].collections[0].get_clim() == (-57.8, 57.8)
    fig = plots.iou_heatmap(change, center=0, cap=3)
    assert fig.axes[0].collections[0].get_clim() == (-3.0, 3.0)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["-1.5", "0.5", "2.0", "57.8"]  # values, not caps
    assert fig.axes[1].collections or fig.axes[1].patches  # the colour bar, with arrows for the capped cells
    with pytest.raises(ValueError, match="cap"):
        plots.iou_heatmap(change, center=0, cap=0)


def test_bar_legends_sit_under_the_axes_and_prediction_grids_take_a_title(tiny_minicity):
    import pandas as pd

    from udalib.models import build_model

    names = ["road", "sidewalk"]
    fig = plots.iou_bars({"a": Scores([50.0, 20.0], 35.0, 90.0, 40.0, names),
                          "b": Scores([60.0, 10.0], 35.0, 90.0, 40.0, names)})
    ax = fig.axes[0]
    assert ax.get_legend() is None and len(fig.legends) == 1
    fig.canvas.draw()
    box = fig.legends[0].get_window_extent()
    assert box.y1 <= ax.get_window_extent().y0  # entirely below the axes: no bar is covered
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"]
    long = pd.DataFrame({"name": ["a", "b"], "seed": [0, 0], "class": ["road"] * 2, "IoU": [40.0, 10.0]})
    fig = plots.class_iou_bars(long)
    assert fig.axes[0].get_legend() is None and len(fig.legends) == 1
    ds = SegmentationList(tiny_minicity, "lists/target_val.txt")
    fig = plots.show_predictions({"m": build_model("minideeplab", 19, width=4)}, ds, [0], title="target images")
    assert fig._suptitle.get_text() == "target images"


def test_style_scatter_shares_the_first_panels_axes_and_counts_points_beyond_them():
    rng = np.random.default_rng(0)
    wide = {"a": rng.normal(0, 1, (20, 3)) * [4.0, 1.0, 0.1], "b": rng.normal(0, 1, (20, 3)) * [4.0, 1.0, 0.1]}
    tight = {"a": wide["a"] * 0.01, "b": wide["b"] * 0.01}
    tight["a"][0] = [1000.0, 0.0, 0.0]  # one image far beyond the first panel's view
    fig = plots.style_scatter({"wide": wide, "tight": tight})
    first, second = fig.axes[0], fig.axes[1]
    assert second.get_xlim() == first.get_xlim() and second.get_ylim() == first.get_ylim()
    assert "1 beyond the view" in second.get_title() and "beyond" not in first.get_title()
    assert "first panel" in second.get_xlabel() and first.get_xlabel() == "principal axis 1"
    spread = np.sqrt(((np.concatenate(list(wide.values())) - np.concatenate(list(wide.values())).mean(0)) ** 2)
                     .sum(1).mean())
    assert f"spread {spread:.2g}" in first.get_title()
    own = plots.style_scatter({"wide": wide, "tight": tight}, shared_axes=False)
    assert own.axes[1].get_xlim() != own.axes[0].get_xlim() and "beyond" not in own.axes[1].get_title()


def test_similarity_heatmaps_say_which_class_has_no_pixels():
    centroids = np.array([[1.0, 0.0], [np.nan, np.nan], [1.0, 1.0]])
    m = plots.cosine_similarity_matrix(centroids)
    assert np.isnan(m[1]).all() and m[0, 2] == pytest.approx(1 / math.sqrt(2))
    fig = plots.similarity_heatmaps({"a": m}, [0, 5, 8])
    texts = [(t.get_text(), t.get_position()[1]) for t in fig.axes[0].texts]
    assert texts == [("no pixels of this class", 1)]  # on the row of the absent class (pole), only there
    assert "0.71" in fig.axes[0].get_title()  # the mean over the similarities that exist


# ------------------------------------------------------------------------------ labels a reader needs
def _colour_bars(fig) -> list:
    """The colour bars of a figure (matplotlib keeps each on its axes)."""
    return [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]


def _unlabelled_colour_bars(fig) -> list[str]:
    """Colour bars whose label is missing or is not words (a bare key such as ``iou``)."""
    bad = []
    for bar in _colour_bars(fig):
        label = bar.ax.get_ylabel() or bar.ax.get_xlabel()
        if len(label.split()) < 2:
            bad.append(repr(label))
    return bad


def test_training_curve_panels_are_titled_in_words_with_both_axes_labelled():
    import pandas as pd

    history = pd.DataFrame({"step": [1, 2], "seg": [1.0, 0.8], "adv_out": [0.7, 0.6], "d_aux": [0.7, 0.69],
                            "lr": [1e-3, 5e-4], "mystery": [1.0, 2.0]})
    fig = plots.training_curves({"a": history}, keys=("seg", "adv_out", "d_aux", "lr", "mystery"))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["source segmentation loss (CE)", "adversarial loss, output level",
                      "discriminator loss, auxiliary level", "learning rate (poly schedule)", "mystery"]
    assert all(ax.get_xlabel() == "training step" for ax in fig.axes)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "loss", "loss", "learning rate", "mystery"]
    # every key a method logs has its words, each more than a bare key
    assert all(len(title.split()) >= 2 and title != key for key, (title, _) in plots.LOG_KEYS.items())
    own = plots.training_curves({"a": history}, keys=("seg",), titles={"seg": "source CE, as in the paper"})
    assert own.axes[0].get_title() == "source CE, as in the paper"


def test_every_colour_bar_is_labelled_with_its_quantity_and_scale(tiny_minicity):
    import pandas as pd

    from udalib.models import build_model
    from udalib.models.discriminator import FCDiscriminator

    ds = SegmentationList(tiny_minicity, "lists/target_val.txt")
    model = build_model("minideeplab", 19, width=4)
    table = pd.DataFrame({"road": [50.0, 70.0], "sky": [np.nan, 30.0]}, index=["a", "b"])
    mean = pd.DataFrame({"palette": [2.0, -9.0]}, index=["m1", "m2"])
    figures = {
        "show_entropy": plots.show_entropy(model, ds, [0]),
        "entropy_maps": plots.entropy_maps(np.zeros((2, 2, 3), np.uint8), {"m": np.full((2, 2), 0.5)}),
        "show_domain_confidence": plots.show_domain_confidence({"m": (model, FCDiscriminator(19, 8))}, ds, [0]),
        "similarity_heatmaps": plots.similarity_heatmaps({"a": np.eye(2)}, [0, 10]),
        "iou_heatmap": plots.iou_heatmap(table),
        "iou_heatmap limits": plots.iou_heatmap(table, limits=(0, 100)),
        "iou_heatmap center": plots.iou_heatmap(table - 50, center=0, cap=10),
        "confusion_matrix_plot": plots.confusion_matrix_plot(np.eye(19)),
        "atlas_heatmap": plots.atlas_heatmap(mean, mean * 0),
    }
    for name, fig in figures.items():
        assert _colour_bars(fig), f"{name} has no colour bar"
        assert not _unlabelled_colour_bars(fig), f"{name}: colour bar without a label in words"
    label = {name: _colour_bars(fig)[0].ax.get_ylabel() for name, fig in figures.items()}
    assert label["iou_heatmap"] == "IoU (%)"  # a scale fitted to the data: no range to state
    assert label["iou_heatmap limits"] == "IoU (%)\nscale 0 to 100"
    assert label["iou_heatmap center"] == "IoU change (points)\ncentred at 0, capped at ±10"
    assert label["entropy_maps"] == "entropy H / log C\n0 certain, 1 uniform"
    assert "log 19 = 2.94" in label["show_entropy"]
    assert _colour_bars(figures["show_entropy"])[0].mappable.get_clim() == pytest.approx((0, math.log(19)))
    assert label["atlas_heatmap"] == "mean margin (mIoU points)\nscale ±5"
    assert plots.iou_heatmap(table, label="mIoU (%)").axes[1].get_ylabel() == "mIoU (%)"


def test_a_colour_bar_that_loses_its_label_is_caught():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    bar = fig.colorbar(ax.imshow(np.eye(2)), ax=ax)
    assert _unlabelled_colour_bars(fig) == ["''"]
    bar.set_label("iou")
    assert _unlabelled_colour_bars(fig) == ["'iou'"]  # a bare key is not a label
    bar.set_label("IoU (%)")
    assert not _unlabelled_colour_bars(fig)


def test_projection_and_bar_axes_are_named():
    import pandas as pd

    rng = np.random.default_rng(0)
    sample = {"rows": rng.normal(size=(30, 4)), "label": np.repeat([0, 10, 13], 10)}
    fig = plots.feature_projection({"features": {"source": sample, "target": sample}}, [0, 10, 13])
    assert fig.axes[0].get_xlabel().startswith("PCA component 1") and fig.axes[0].get_ylabel() == "PCA component 2"
    names = ["road", "sidewalk"]
    fig = plots.iou_bars({"a": Scores([50.0, 20.0], 35.0, 90.0, 40.0, names)})
    assert fig.axes[0].get_ylabel() == "IoU (%)"
    long = pd.DataFrame({"name": ["a"], "seed": [0], "class": ["road"], "IoU": [40.0]})
    assert plots.class_iou_bars(long).axes[0].get_ylabel().startswith("IoU (%)")
