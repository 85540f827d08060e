"""Widgets that compare runs: predictions side by side, and per-class IoU over methods, seeds and class sets.

Both read run folders (:mod:`udalib.results`), so a run trained anywhere (a notebook, papermill, the command
line) shows up in them with no glue code. Every picture comes from a pure function of :mod:`udalib.viz.plots`.
Outputs are written with ``out.outputs = ()`` and ``append_display_data``, which behaves the same in JupyterLab,
papermill, nbval and plain Python (``with out:`` does not). Import this module explicitly (it needs ipywidgets):
``from udalib.viz import widgets``. Taught in ``notebooks/11_compare_methods.ipynb``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import Image

from .. import results
from ..data.labels import ClassSet, get_class_set
from ..eval.evaluate import predict
from ..experiment import Run, open_data
from ..losses import entropy_map
from ..models import NORMALIZATION
from ..results import Groups
from . import plots


def _show(out: widgets.Output, *objects) -> None:
    """Replace what ``out`` shows; figures become PNG images (and are closed, so no frontend shows them twice)."""
    out.outputs = ()
    for obj in objects:
        if isinstance(obj, plt.Figure):
            buf = io.BytesIO()
            obj.savefig(buf, format="png", dpi=80)
            plt.close(obj)
            obj = Image(data=buf.getvalue())
        out.append_display_data(obj)


def _class_set_of(num_classes: int) -> ClassSet:
    if num_classes not in (19, 16, 13):
        raise ValueError(f"runs with {num_classes} classes have no palette: the comparer shows 19-, 16- or 13-class "
                         "runs")
    return get_class_set(num_classes)


class PredictionCache:
    """Predictions of run checkpoints on the first ``images`` images of a labelled dataset, made on first request.

    The first time any image of a run is asked for, its checkpoint is loaded and run over all ``images`` images at
    once (one batch for MiniCity's default of 8); only the predicted classes and the normalised entropy are kept,
    not the model. Later requests, and every change of opacity, class or error mask, cost no forward pass.
    """

    def __init__(self, runs: Mapping[str, Run], dataset: str = "minicity:target/val", images: int = 8, *,
                 device: str = "cpu"):
        if not runs:
            raise ValueError("no runs to compare: pass {name: Run}, e.g. from udalib.results.load_runs()")
        classes = {r.config.num_classes for r in runs.values()}
        if len(classes) > 1:
            raise ValueError(f"the runs predict different class sets ({sorted(classes)} classes): compare runs of "
                             "one class set")
        self.runs, self.dataset, self.device = dict(runs), dataset, device
        self.class_set = _class_set_of(classes.pop())
        self._data: dict[tuple, object] = {}
        reference = self._open(next(iter(self.runs.values())))
        if not reference.labelled:
            raise ValueError(f"{dataset} has no labels: pick a labelled evaluation set, e.g. minicity:target/val")
        if not 1 <= images <= len(reference):
            raise ValueError(f"images must lie between 1 and {len(reference)} (the size of {dataset}), got {images}")
        self.reference, self.images = reference, images
        self._pred: dict[str, torch.Tensor] = {}
        self._entropy: dict[str, torch.Tensor] = {}
        self.loads = 0  # checkpoints loaded so far: one per run, however often it is shown

    def _open(self, run: Run):
        """The dataset as ``run``'s model expects it (normalisation, size); opened once per convention."""
        c = run.config
        key = (NORMALIZATION.get(c.model, "imagenet"), c.size, c.num_classes, c.data_root)
        if key not in self._data:
            self._data[key] = open_data(self.dataset, default_split="val", train=False, exp=c)
        return self._data[key]

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image (H, W, 3) uint8, label (H, W))`` of image ``index``, as stored (not normalised)."""
        self._check(index)
        return self.reference.load(index)

    def prediction(self, name: str, index: int) -> np.ndarray:
        """Class ids that run ``name`` predicts for image ``index`` (its evaluation's flip setting), ``(H, W)``."""
        self._check(index)
        self._predict(name)
        return self._pred[name][index].numpy()

    def entropy(self, name: str, index: int) -> np.ndarray:
        """Normalised entropy :math:`H / \\log C` of run ``name``'s posterior on image ``index``, ``(H, W)``."""
        self._check(index)
        self._predict(name)
        return self._entropy[name][index].numpy()

    def _check(self, index: int) -> None:
        if not 0 <= index < self.images:
            raise IndexError(f"image {index} is outside the {self.images} images of this comparer "
                             f"(0..{self.images - 1})")

    def _predict(self, name: str) -> None:
        if name in self._pred:
            return
        if name not in self.runs:
            raise KeyError(f"no run called {name!r}; runs: {', '.join(self.runs)}")
        run = self.runs[name]
        data = self._open(run)
        model = run.model(self.device)
        self.loads += 1
        preds, entropies = [], []
        for start in range(0, self.images, 16):
            images = torch.stack([data[i][0] for i in range(start, min(start + 16, self.images))])
            probs = predict(model, images.to(self.device), flip=run.config.flip).cpu()
            size = self.reference.load(start)[1].shape
            if probs.shape[-2:] != size:  # score at label resolution, as evaluate() does
                probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=True)
            preds.append(probs.argmax(dim=1).to(torch.uint8))
            entropies.append(entropy_map(probs.clamp_min(1e-12).log()) / math.log(probs.shape[1]))
        self._pred[name], self._entropy[name] = torch.cat(preds), torch.cat(entropies)


def _text_colour(rgb: Sequence[int]) -> str:
    return "black" if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 else "white"


class PredictionComparer(widgets.VBox):
    """Pick an image and two or more runs: the image, its ground truth and each run's prediction side by side.

    Controls: the image, the runs (ctrl/shift-click for several), the opacity of the labels over the image, an
    error mask (wrong pixels in red, with their share), the view (predictions or their entropy), and a legend in
    the dataset's palette: click a class to highlight it in every panel (its errors only, and its IoU on this image
    in the status line); click it again to clear. ``figure`` is the last figure drawn, ``scores`` its numbers.
    """

    def __init__(self, runs: Mapping[str, Run], dataset: str = "minicity:target/val", *, images: int = 8,
                 selected: Sequence[str] | None = None, alpha: float = 0.6, device: str = "cpu"):
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha (the opacity of the labels) must lie in [0, 1], got {alpha}")
        self.cache = PredictionCache(runs, dataset, images, device=device)
        names = list(runs)
        selected = list(selected) if selected is not None else names[:2]
        unknown = [s for s in selected if s not in runs]
        if unknown:
            raise ValueError(f"selected runs {unknown} are not among the runs given: {names}")
        self.image = widgets.IntSlider(0, min=0, max=images - 1, description="image")
        self.methods = widgets.SelectMultiple(options=names, value=tuple(selected), rows=min(8, len(names)),
                                              description="runs")
        self.opacity = widgets.FloatSlider(alpha, min=0, max=1, step=0.05, description="opacity")
        self.errors = widgets.Checkbox(False, description="error mask", indent=False)
        self.view = widgets.ToggleButtons(options=["prediction", "entropy"], description="show")
        cs = self.cache.class_set
        present = sorted(set(np.concatenate([np.unique(self.cache.sample(i)[1]) for i in range(images)]).tolist())
                         & set(range(cs.num_classes)))
        self.legend = {}
        for c in present:
            button = widgets.Button(description=cs.names[c], tooltip=f"highlight {cs.names[c]}",
                                    layout=widgets.Layout(width="auto"))
            button.style.button_color = "#{:02x}{:02x}{:02x}".format(*cs.palette[c])
            button.style.text_color = _text_colour(cs.palette[c])
            button.on_click(lambda _b, c=c: self.toggle_highlight(c))
            self.legend[c] = button
        self.highlight: int | None = None
        self.status = widgets.HTML()
        self.out = widgets.Output()
        self.figure: plt.Figure | None = None
        self.scores: dict[str, float] = {}
        for control in (self.image, self.methods, self.opacity, self.errors, self.view):
            control.observe(self._redraw, names="value")
        controls = widgets.HBox([widgets.VBox([self.image, self.opacity, self.errors, self.view]), self.methods])
        super().__init__([controls, widgets.HBox(list(self.legend.values()), layout=widgets.Layout(flex_flow="wrap")),
                          self.status, self.out])
        self.add_class("udalib-compare")
        self._redraw()

    def toggle_highlight(self, class_id: int) -> None:
        """Highlight ``class_id`` (a legend click), or clear the highlight if it is the highlighted class."""
        self.highlight = None if self.highlight == class_id else class_id
        for c, button in self.legend.items():
            button.style.font_weight = "bold" if c == self.highlight else "normal"
            button.layout.border = "2px solid black" if c == self.highlight else ""
        self._redraw()

    def _redraw(self, _change=None) -> None:
        names = list(self.methods.value)
        if len(names) < 2:
            self.figure, self.scores = None, {}
            self.out.outputs = ()
            self.status.value = "Pick two or more runs to compare (ctrl- or shift-click in the list)."
            return
        i, cs = self.image.value, self.cache.class_set
        image, label = self.cache.sample(i)
        preds = {n: self.cache.prediction(n, i) for n in names}
        # 100 - error share: pixel accuracy, or with a highlighted class its IoU on this image
        self.scores = {n: float(100 - plots.error_overlay(image, label, p, highlight=self.highlight)[1])
                       for n, p in preds.items()}
        if self.view.value == "entropy":
            fig = plots.entropy_maps(image, {n: self.cache.entropy(n, i) for n in names})
        else:
            fig = plots.compare_predictions(image, label, preds, alpha=self.opacity.value, errors=self.errors.value,
                                            highlight=self.highlight, names=cs.names, palette=cs.palette)
        what = f"{cs.names[self.highlight]} IoU" if self.highlight is not None else "pixel accuracy"
        numbers = " · ".join(f"{n}: {v:.1f}%" for n, v in self.scores.items())
        self.status.value = f"<b>image {i}</b> · {what} on this image · {numbers}"
        self.figure = fig
        _show(self.out, fig)


class IoUExplorer(widgets.VBox):
    """Per-class IoU of several methods over the seeds you pick, on the 19-, 16- or 13-class set.

    ``groups``: ``{name: runs of one experiment, one per seed}`` (:func:`udalib.results.group_runs`). The table
    has one row per method: the mean IoU of each class over the selected seeds, the mIoU over the class set (mean
    and standard deviation over seeds) and its gain over the baseline; "sort by gain" orders the rows by that gain.
    The bars show the same per-class means, with the standard deviation over seeds. ``table`` is the last table.
    """

    def __init__(self, groups: Groups, dataset: str = "minicity:target/val", *, selected: Sequence[str] | None = None,
                 baseline: str | None = None, class_set: str = "19"):
        names = [n for n, runs in groups.items() if any(dataset in r.scores for r in runs)]
        if not names:
            from ..experiment import split_target_bn

            found = sorted({split_target_bn(d)[0] for runs in groups.values() for r in runs for d in r.scores})
            raise ValueError(f"no run has scores on {dataset!r}; the runs were evaluated on: {found}")
        for what, value in (("selected", selected or ()), ("baseline", [baseline] if baseline else ())):
            unknown = [v for v in value if v not in names]
            if unknown:
                raise ValueError(f"{what} {unknown}: not among the methods scored on {dataset!r}: {names}")
        self.groups, self.dataset = groups, dataset
        seeds = sorted({r.config.seed for n in names for r in groups[n]})
        self.methods = widgets.SelectMultiple(options=names, value=tuple(selected or names[:4]),
                                              rows=min(10, len(names)), description="methods")
        self.seeds = widgets.SelectMultiple(options=seeds, value=tuple(seeds), rows=min(5, len(seeds)),
                                            description="seeds")
        self.class_set = widgets.ToggleButtons(options=["19", "16", "13"], value=str(class_set),
                                               description="classes")
        self.baseline = widgets.Dropdown(options=names, value=baseline or names[0], description="baseline")
        self.sort = widgets.Checkbox(False, description="sort by gain", indent=False)
        self.status = widgets.HTML()
        self.table_out, self.plot_out = widgets.Output(), widgets.Output()
        self.table, self.figure = None, None
        for control in (self.methods, self.seeds, self.class_set, self.baseline, self.sort):
            control.observe(self._update, names="value")
        controls = widgets.HBox([self.methods, widgets.VBox([self.seeds, self.baseline, self.class_set, self.sort])])
        super().__init__([controls, self.status, self.table_out, self.plot_out])
        self.add_class("udalib-iou")
        self._update()

    def _update(self, _change=None) -> None:
        seeds, base = list(self.seeds.value), self.baseline.value
        names = list(dict.fromkeys([base, *self.methods.value]))  # the baseline row first, always shown
        groups = {n: self.groups[n] for n in names}
        board = results.leaderboard(groups, self.dataset, class_set=self.class_set.value, seeds=seeds,
                                    target_bn=False)
        if base not in board.index:
            self.table, self.figure = None, None
            self.table_out.outputs, self.plot_out.outputs = (), ()
            self.status.value = f"The baseline {base!r} has no run with the selected seeds {seeds}: pick other seeds."
            return
        per_class = results.class_iou_table(groups, self.dataset, class_set=self.class_set.value, seeds=seeds)
        table = per_class.join(board[["seeds", "mIoU", "std"]], how="inner")
        table["gain"] = table["mIoU"] - board.loc[base, "mIoU"]
        if self.sort.value:
            table = table.sort_values("gain", ascending=False, kind="stable")
        self.table = table
        left_out = [n for n in names if n not in table.index]
        self.status.value = (f"mIoU over the {self.class_set.value}-class set on {self.dataset}, mean over seeds "
                             f"{', '.join(map(str, seeds))}; gain over <b>{base}</b>"
                             + (f" · no run with these seeds: {', '.join(left_out)}" if left_out else ""))
        long = results.class_iou_long(groups, self.dataset, class_set=self.class_set.value, seeds=seeds)
        self.figure = plots.class_iou_bars(long, order=list(table.index),
                                           title=f"per-class IoU (%) on {self.dataset}, mean ± std over seeds")
        _show(self.table_out, table.round(2))
        _show(self.plot_out, self.figure)
