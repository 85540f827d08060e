"""The comparison widgets and the results store they read, driven in Python against hand-computed numbers.

The store is written by hand: run folders with chosen per-class IoUs, and checkpoints of MiniDeepLabs whose head
predicts one class everywhere, so every picture and number the widgets show can be computed from the labels alone.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, replace

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from udalib import results  # noqa: E402
from udalib.data.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE  # noqa: E402
from udalib.data.minicity import MiniCitySpec  # noqa: E402
from udalib.eval.metrics import Scores  # noqa: E402
from udalib.experiment import TARGET_BN, Experiment  # noqa: E402
from udalib.models import build_model  # noqa: E402

widgets = pytest.importorskip("udalib.viz.widgets")  # needs ipywidgets (the notebooks extra)

TARGET = "minicity:target/val"
ROAD, SIDEWALK, POLE, SKY = 0, 1, 5, 10


def _iou(**values: float) -> list[float]:
    """A 19-class IoU list: the given classes, NaN (absent) elsewhere."""
    return [values.get(name.replace(" ", "_"), math.nan) for name in CITYSCAPES_CLASSES]


def _constant_model(class_id: int | None, seed: int = 0) -> dict:
    """A MiniDeepLab (width 4) state_dict; with ``class_id`` its main head predicts that class at every pixel."""
    torch.manual_seed(seed)
    model = build_model("minideeplab", 19, width=4)
    if class_id is not None:
        with torch.no_grad():
            for branch in model.head.branches:
                branch.weight.zero_()
                branch.bias.zero_()
            model.head.branches[0].bias[class_id] = 10.0
    return model.state_dict()


def _write_run(root, exp: Experiment, scores: dict[str, list[float]], state: dict, name: str | None = None):
    folder = root / (name or exp.name)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(asdict(exp), default=list))
    out = {}
    for spec, iou in scores.items():
        finite = [v for v in iou if not math.isnan(v)]
        out[spec] = Scores(iou, sum(finite) / len(finite), 0.0, 0.0, list(CITYSCAPES_CLASSES)).as_dict()
    (folder / "scores.json").write_text(json.dumps(out))
    torch.save(state, folder / "model.pt")
    return folder


@pytest.fixture()
def store(isolated_home, tiny_minicity):
    """UDALIB_HOME with the tiny MiniCity as its default build and a hand-written runs/ folder:
    source-only (seeds 0, 1; predicts road), MaxSquare from it (seeds 0, 1; predicts sky), an oracle (seed 0;
    a random network), a stale copy of a MaxSquare run and a folder without scores."""
    shutil.copytree(tiny_minicity, isolated_home / "data" / MiniCitySpec().name)
    runs = isolated_home / "runs"
    small = {"steps": 3, "batch_size": 4, "model_args": {"width": 4}}
    for seed, (src, ms, bn) in enumerate([((40, 20, 10), (60, 40, 0), 80), ((50, 30, 20), (70, 50, 30), 90)]):
        source = Experiment(seed=seed, **small)
        _write_run(runs, source, {TARGET: _iou(road=src[0], sidewalk=src[1], pole=src[2])}, _constant_model(ROAD))
        adapted = Experiment(method="maxsquare", target="minicity:target", init=source.name, seed=seed, **small)
        _write_run(runs, adapted, {TARGET: _iou(road=ms[0], sidewalk=ms[1], pole=ms[2]),
                                   TARGET + TARGET_BN: _iou(road=bn)}, _constant_model(SKY))
    oracle = Experiment(source="minicity:target/oracle", label="oracle", **small)
    _write_run(runs, oracle, {TARGET: _iou(road=90, sidewalk=80, pole=70)}, _constant_model(None, seed=3))
    # trained with other preset values: the folder's key is not the config's key any more
    stale = replace(Experiment(method="maxsquare", target="minicity:target", **small), init="x")
    _write_run(runs, stale, {TARGET: _iou(road=1)}, _constant_model(ROAD), name="maxsquare-s0-0123456789")
    (runs / "unfinished").mkdir()
    (runs / "unfinished" / "config.json").write_text(json.dumps(asdict(Experiment())))
    return runs


def _label(tiny_minicity, index: int) -> np.ndarray:
    """Image ``index`` of the target val list, read straight from its PNG (not through the library)."""
    return np.asarray(Image.open(tiny_minicity / "target" / "labels" / f"val_{index:05d}.png")).astype(np.int64)


def _image(tiny_minicity, index: int) -> np.ndarray:
    return np.asarray(Image.open(tiny_minicity / "target" / "images" / f"val_{index:05d}.png").convert("RGB"))


# ------------------------------------------------------------------------------------------------ the store
def test_the_store_groups_seeds_and_leaves_stale_and_unfinished_runs_out(store):
    runs = results.load_runs()
    assert len(runs) == 5  # 2 source + 2 adapted + oracle; not the stale copy, not the folder without scores
    assert len(results.load_runs(stale=True)) == 6
    groups = results.group_runs(runs)
    assert list(groups) == ["maxsquare", "oracle", "source_only"]
    assert [r.config.seed for r in groups["maxsquare"]] == [0, 1]  # init differs by seed, grouped all the same
    assert {r.config.init for r in groups["maxsquare"]} == {r.name for r in groups["source_only"]}
    # experiments that share a label are named by what differs
    more = replace(groups["maxsquare"][0].config, steps=5)
    _write_run(store, more, {TARGET: _iou(road=1)}, _constant_model(ROAD))
    names = list(results.group_runs(results.load_runs()))
    assert names == ["maxsquare · steps 3", "maxsquare · steps 5", "oracle", "source_only"]
    rest = results.group_runs(results.load_runs(), exclude=groups["source_only"])
    assert "source_only" not in rest and len(rest) == 3


def test_a_run_folder_of_another_udalib_version_is_skipped_with_a_warning(store):
    broken = store / "from-another-version"
    shutil.copytree(results.load_runs()[0].dir, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "new_field": 1}))  # a field this udalib lacks
    with pytest.warns(UserWarning, match="skipped 1 run folders .*from-another-version.*new_field"):
        assert len(results.load_runs()) == 5


def test_load_runs_without_a_runs_folder_says_what_to_do(isolated_home):
    with pytest.raises(FileNotFoundError, match="UDALIB_RUNS"):
        results.load_runs()


def test_leaderboard_means_stds_gains_and_class_sets_by_hand(store):
    groups = results.group_runs(results.load_runs())
    board = results.leaderboard(groups, TARGET, baseline="source_only")
    # source: (40+20+10)/3 = 23.33 and (50+30+20)/3 = 33.33; maxsquare: 33.33 and 50
    assert board.loc["source_only", "mIoU"] == pytest.approx(28.3333, abs=1e-3)
    assert board.loc["source_only", "std"] == pytest.approx(10 / math.sqrt(2))  # sample std of two seeds
    assert board.loc["maxsquare", "mIoU"] == pytest.approx(41.6667, abs=1e-3)
    assert board.loc["maxsquare", "vs source_only"] == pytest.approx(13.3333, abs=1e-3)
    assert board.loc["oracle", "seeds"] == "0" and math.isnan(board.loc["oracle", "std"])
    assert board.loc["maxsquare", "target BN mIoU"] == pytest.approx(85.0)  # road only: 80 and 90
    assert math.isnan(board.loc["source_only", "target BN mIoU"])  # it never saw a target image
    # 13 classes: no pole; 16 classes keep it
    board13 = results.leaderboard(groups, TARGET, class_set="13", baseline="source_only")
    assert board13.loc["source_only", "mIoU"] == pytest.approx(35.0)  # 30 and 40
    assert board13.loc["maxsquare", "vs source_only"] == pytest.approx(20.0)  # 55 - 35
    assert results.leaderboard(groups, TARGET, class_set="16").loc["maxsquare", "mIoU"] == pytest.approx(41.6667,
                                                                                                          abs=1e-3)
    only0 = results.leaderboard(groups, TARGET, seeds=[0], baseline="oracle")
    assert only0.loc["maxsquare", "vs oracle"] == pytest.approx(33.3333 - 80, abs=1e-3)
    shown = results.with_spread(board)
    assert shown.loc["source_only", "mIoU"] == "28.3 ± 7.1" and shown.loc["oracle", "mIoU"] == "80.0"
    assert shown.loc["maxsquare", "target BN mIoU"] == "85.0 ± 7.1" and shown.loc["oracle", "target BN mIoU"] == ""
    assert "std" not in shown and "target BN std" not in shown
    with pytest.raises(ValueError, match="baseline 'nope'"):
        results.leaderboard(groups, TARGET, baseline="nope")


def test_class_set_miou_of_a_19_class_run_is_its_stored_miou(store):
    for run in results.load_runs():
        assert results.class_set_miou(run.scores[TARGET], "19") == pytest.approx(run.scores[TARGET].miou)


# --------------------------------------------------------------------------------------------- IoU explorer
def test_iou_explorer_table_follows_methods_seeds_class_set_and_sort(store):
    groups = results.group_runs(results.load_runs())
    explorer = widgets.IoUExplorer(groups, TARGET, selected=["maxsquare"], baseline="source_only")
    t = explorer.table
    assert list(t.index) == ["source_only", "maxsquare"]  # the baseline row first
    assert t.loc["maxsquare", "road"] == pytest.approx(65.0) and t.loc["source_only", "pole"] == pytest.approx(15.0)
    assert t.loc["maxsquare", "gain"] == pytest.approx(13.3333, abs=1e-3)
    assert [c for c in t.columns if c in CITYSCAPES_CLASSES] == ["road", "sidewalk", "pole"]
    assert explorer.table_out.outputs[0]["output_type"] == "display_data"
    # the bars are the per-class means over the seeds
    heights = sorted(round(p.get_height(), 3) for p in explorer.figure.axes[0].patches if p.get_height() > 0)
    assert heights == [15.0, 15.0, 25.0, 45.0, 45.0, 65.0]

    explorer.class_set.value = "13"
    assert "pole" not in explorer.table.columns
    assert explorer.table.loc["maxsquare", "gain"] == pytest.approx(20.0)

    explorer.seeds.value = (0,)
    assert explorer.table.loc["maxsquare", "mIoU"] == pytest.approx(50.0)  # (60 + 40) / 2
    assert explorer.table.loc["maxsquare", "seeds"] == "0"

    explorer.class_set.value = "19"
    explorer.methods.value = ("maxsquare", "oracle")
    assert list(explorer.table.index) == ["source_only", "maxsquare", "oracle"]
    explorer.sort.value = True
    assert list(explorer.table.index) == ["oracle", "maxsquare", "source_only"]
    assert explorer.table.loc["oracle", "gain"] == pytest.approx(80 - 23.3333, abs=1e-3)

    explorer.baseline.value = "oracle"
    explorer.seeds.value = (1,)  # the oracle has no seed-1 run: nothing to compare against
    assert explorer.table is None and "no run with the selected seeds" in explorer.status.value
    assert explorer.table_out.outputs == ()


def test_iou_explorer_rejects_what_it_cannot_show(store):
    groups = results.group_runs(results.load_runs())
    with pytest.raises(ValueError, match="evaluated on"):
        widgets.IoUExplorer(groups, "cityscapes/val")
    with pytest.raises(ValueError, match="baseline"):
        widgets.IoUExplorer(groups, TARGET, baseline="nope")


# ------------------------------------------------------------------------------------- prediction comparer
def _panel(comparer, column: int, row: int = 0) -> np.ndarray:
    cols = len(comparer.figure.axes) // (2 if comparer.errors.value else 1)
    return np.asarray(comparer.figure.axes[row * cols + column].images[0].get_array())


def test_comparer_shows_the_right_images_and_numbers(store, tiny_minicity):
    groups = results.group_runs(results.load_runs())
    runs = {"road": groups["source_only"][0], "sky": groups["maxsquare"][0], "net": groups["oracle"][0]}
    comparer = widgets.PredictionComparer(runs, TARGET, images=4, alpha=1.0)
    assert list(comparer.methods.value) == ["road", "sky"]
    image, label = _image(tiny_minicity, 0), _label(tiny_minicity, 0)
    valid = label != 255
    # opacity 1: the ground truth panel is the palette where labelled, the image where not
    expected = np.where(valid[..., None], np.asarray(CITYSCAPES_PALETTE, np.uint8)[np.where(valid, label, 0)], image)
    assert np.array_equal(_panel(comparer, 0), image)
    assert np.array_equal(_panel(comparer, 1), expected)
    assert (_panel(comparer, 2) == CITYSCAPES_PALETTE[ROAD]).all()
    assert (_panel(comparer, 3) == CITYSCAPES_PALETTE[SKY]).all()
    assert comparer.scores["road"] == pytest.approx(100 * (label == ROAD).sum() / valid.sum())
    assert comparer.scores["sky"] == pytest.approx(100 * (label == SKY).sum() / valid.sum())
    assert "image 0" in comparer.status.value and "pixel accuracy" in comparer.status.value
    assert len(comparer.out.outputs) == 1 and "image/png" in comparer.out.outputs[0]["data"]

    comparer.opacity.value = 0.5  # every pixel is predicted: half image, half road colour
    want = np.round(0.5 * image + 0.5 * np.array(CITYSCAPES_PALETTE[ROAD])).astype(np.uint8)
    assert np.array_equal(_panel(comparer, 2), want)

    comparer.image.value = 3
    label3 = _label(tiny_minicity, 3)
    assert "image 3" in comparer.status.value
    assert comparer.scores["road"] == pytest.approx(100 * (label3 == ROAD).sum() / (label3 != 255).sum())

    comparer.errors.value = True  # a second row: wrong pixels red, with their share in the title
    wrong = (label3 != 255) & (label3 != SKY)
    assert (_panel(comparer, 3, row=1)[wrong] == (255, 0, 0)).all()
    share = 100 * wrong.sum() / (label3 != 255).sum()
    assert comparer.figure.axes[4 + 3].get_title() == f"errors {share:.1f}%"

    comparer.legend[ROAD].click()  # highlight road: the sky run's road IoU is 0, the road run's is its accuracy
    assert comparer.highlight == ROAD and "road IoU" in comparer.status.value
    assert comparer.scores["sky"] == 0.0
    assert comparer.scores["road"] == pytest.approx(100 * (label3 == ROAD).sum() / (label3 != 255).sum())
    gt = _panel(comparer, 1)
    grey = np.round(_image(tiny_minicity, 3).astype(float).mean(axis=2) * 0.5).astype(np.uint8)
    not_road = label3 != ROAD
    assert np.array_equal(gt[not_road][:, 0], grey[not_road])  # everything else dimmed to grey
    comparer.legend[ROAD].click()
    assert comparer.highlight is None

    comparer.methods.value = ("net", "road")  # a real network: its panel is its argmax, recomputed here
    model = runs["net"].model()
    from udalib.data import open_dataset

    x = open_dataset("minicity:target", "val")[3][0]
    with torch.no_grad():
        pred = model(x[None])["out"].argmax(1)[0].numpy()
    assert np.array_equal(comparer.cache.prediction("net", 3), pred)
    assert comparer.scores["net"] == pytest.approx(100 * ((pred == label3) & (label3 != 255)).sum()
                                                   / (label3 != 255).sum())


def test_comparer_predicts_each_run_once_and_entropy_is_exact(store):
    groups = results.group_runs(results.load_runs())
    runs = {"road": groups["source_only"][0], "sky": groups["maxsquare"][0], "net": groups["oracle"][0]}
    comparer = widgets.PredictionComparer(runs, TARGET, images=4)
    assert comparer.cache.loads == 2
    for value in (0.2, 0.9):
        comparer.opacity.value = value
    comparer.image.value = 2
    comparer.errors.value = True
    assert comparer.cache.loads == 2  # no new forward pass for opacity, image, errors
    comparer.methods.value = ("road", "net")
    comparer.methods.value = ("road", "sky", "net")
    assert comparer.cache.loads == 3
    comparer.view.value = "entropy"  # logits 10 for one class, 0 for 18: H / log 19 by hand
    p, q = math.exp(10) / (math.exp(10) + 18), 1 / (math.exp(10) + 18)
    h = -(p * math.log(p) + 18 * q * math.log(q)) / math.log(19)
    assert np.allclose(comparer.cache.entropy("road", 2), h, atol=1e-5)
    assert comparer.figure.axes[1].get_title() == f"road\nmean {h:.2f}"

    comparer.methods.value = ("road",)
    assert comparer.figure is None and comparer.out.outputs == ()
    assert "two or more" in comparer.status.value


def test_comparer_bad_inputs_say_what_to_do(store):
    groups = results.group_runs(results.load_runs())
    runs = {"road": groups["source_only"][0], "sky": groups["maxsquare"][0]}
    with pytest.raises(ValueError, match="no runs"):
        widgets.PredictionComparer({}, TARGET)
    with pytest.raises(ValueError, match="between 1 and 8"):
        widgets.PredictionComparer(runs, TARGET, images=9)
    with pytest.raises(ValueError, match="not among the runs"):
        widgets.PredictionComparer(runs, TARGET, selected=["road", "oracle"])
    with pytest.raises(ValueError, match="has no labels"):
        widgets.PredictionComparer(runs, "minicity:target/train")
    with pytest.raises(ValueError, match="alpha"):
        widgets.PredictionComparer(runs, TARGET, alpha=2.0)
    comparer = widgets.PredictionComparer(runs, TARGET, images=2)
    with pytest.raises(IndexError, match="outside the 2 images"):
        comparer.cache.prediction("road", 5)
