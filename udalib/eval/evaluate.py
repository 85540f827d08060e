"""Run a segmentation model over a labelled loader and score it (MaxSquare ``tools/evaluate.py``, AdaptSegNet
``evaluate_cityscapes.py`` and ``compute_iou.py``).

The original code bases disagree on *how* they score, so every choice is an explicit argument and ends up in
``Scores.protocol``:

* label resolution: MaxSquare/SNR/UDAclustering score at 1024x512 with nearest-downsampled labels
  (``label_size=(512, 1024)``); AdaptSegNet upsamples the logits to the full 2048x1024 labels
  (``label_size=None`` with full-resolution labels);
* flip averaging of the main head (MaxSquare ``--flip``, MLSL);
* absent classes: skipped (``absent="nan"``) or counted as 0 (``absent="zero"``, CBST/MLSL);
* class set: 19, 16 or 13 classes, or a 16/13 subset of a 19-class model (MaxSquare ``out_16_13``).

The two protocols of the field are named in :data:`PROTOCOLS` (``"maxsquare"``, ``"adaptsegnet"``);
:func:`evaluate_protocol` applies one and records it, with the model-selection rule, next to the number.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from udalib.data.labels import ClassSet, get_class_set
from udalib.eval.metrics import Absent, ConfusionMatrix, Scores, scores_from_matrix, subset_scores


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore every submodule's own train/eval flag afterwards.

    Restoring per submodule (not ``model.train(was_training)``) keeps deliberately frozen parts,
    e.g. batch-norm layers kept in eval mode during training, as they were.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _class_scores(model: nn.Module, images: Tensor, flip: bool) -> Tensor:
    """Logits of the main head, or with ``flip`` the flip-averaged probabilities. Call under no_grad.

    Shape: ``(N, 3, H, W)`` -> ``(N, C, H', W')`` (the model's output resolution).
    """
    logits = model(images)["out"]
    if not flip:
        return logits
    flipped = model(images.flip(-1))["out"].softmax(dim=1).flip(-1)  # flip back along W
    return (logits.softmax(dim=1) + flipped) / 2


def predict(model: nn.Module, images: Tensor, *, flip: bool = False) -> Tensor:
    """Class probabilities of the main head (``model(x)["out"]``), optionally flip-averaged.

    .. math:: p = \\tfrac12 \\big( \\sigma(f(x)) + \\mathrm{flip}_W \\sigma(f(\\mathrm{flip}_W x)) \\big),
              \\quad \\sigma = \\mathrm{softmax} \\text{ over classes}

    Runs in eval mode under ``torch.no_grad``; the model's train/eval flags are restored afterwards.

    Shape: ``images`` ``(N, 3, H, W)`` -> ``(N, C, H', W')`` at the model's output resolution.
    """
    with eval_mode(model), torch.no_grad():
        out = _class_scores(model, images, flip)
    return out if flip else out.softmax(dim=1)


def _size_str(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _label_resolution(label_sizes: set[tuple[int, int]], input_sizes: set[tuple[int, int]]) -> str:
    """``"input"`` when labels matched the images, else ``"HxW"`` (or the sorted list if they vary)."""
    if label_sizes == input_sizes and len(label_sizes) <= 1:
        return "input"
    return ", ".join(_size_str(s) for s in sorted(label_sizes))


def _batches(loader: Iterable, max_batches: int | None, progress: bool) -> Iterable:
    total = len(loader) if hasattr(loader, "__len__") else None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    if progress:
        from tqdm.auto import tqdm  # lazily: only needed for the progress bar

        loader = tqdm(loader, total=total, desc="evaluate", leave=False)
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        yield batch


def evaluate(model: nn.Module, loader: Iterable, num_classes: int, *, device: str | torch.device = "cpu",
             flip: bool = False, label_size: tuple[int, int] | None = None,
             input_size: tuple[int, int] | None = None, class_names: list[str] | None = None,
             class_set: str | int | ClassSet | None = None, absent: Absent = "nan", max_batches: int | None = None,
             protocol: dict | None = None, progress: bool = False) -> Scores:
    """Score ``model`` on a loader of ``(image, label, index)`` batches; returns :class:`Scores` (in %).

    Per batch: images are resized to ``input_size`` if given (bilinear, antialiased: AdaptSegNet's protocol feeds
    1024x512 images and scores at the full-resolution labels); labels (trainIds, 255 = ignore) are
    nearest-resized to ``label_size`` if given (``nearest-exact``, the pixel PIL's NEAREST picks); the
    main-head logits (or, with ``flip``, the flip-averaged probabilities) are resized bilinearly
    (``align_corners=True``) to the label size when it differs, i.e. scoring is at label resolution;
    the argmax goes into one confusion matrix for the whole set.

    ``class_set``: when it has ``num_classes`` classes it only names the classes; when the model has
    19 classes and ``class_set`` is "16" or "13", the subset mIoU is computed from the 19-class
    matrix as MaxSquare does (:func:`~udalib.eval.metrics.subset_scores`).
    ``protocol`` adds entries to the recorded protocol, e.g. ``{"model_selection": "last checkpoint"}``.
    The model must already be on ``device``; its train/eval flags are restored afterwards.

    Shape: loader images ``(N, 3, H, W)``, labels ``(N, H_l, W_l)`` integer.
    """
    subset = get_class_set(class_set) if class_set is not None else None
    if subset is not None and subset.num_classes != num_classes and num_classes != 19:
        raise ValueError(f"class set {subset.name!r} does not fit a {num_classes}-class model")
    cm = ConfusionMatrix(num_classes, device=device)
    label_sizes: set[tuple[int, int]] = set()
    input_sizes: set[tuple[int, int]] = set()
    num_images = 0
    with eval_mode(model), torch.no_grad():
        for image, label, *_ in _batches(loader, max_batches, progress):
            image, label = image.to(device), label.to(device).long()
            if input_size is not None and tuple(image.shape[-2:]) != tuple(input_size):
                image = F.interpolate(image, size=tuple(input_size), mode="bilinear", antialias=True)
            if label_size is not None and tuple(label.shape[-2:]) != tuple(label_size):
                label = F.interpolate(label[:, None].float(), size=tuple(label_size),
                                      mode="nearest-exact")[:, 0].long()
            out = _class_scores(model, image, flip)
            if out.shape[-2:] != label.shape[-2:]:
                out = F.interpolate(out, size=label.shape[-2:], mode="bilinear", align_corners=True)
            cm.update(out.argmax(dim=1), label)
            label_sizes.add(tuple(label.shape[-2:]))
            input_sizes.add(tuple(image.shape[-2:]))
            num_images += image.shape[0]

    record = {"label_resolution": _label_resolution(label_sizes, input_sizes), "flip": flip,
              "absent": absent, "model_selection": "unspecified", "num_images": num_images}
    record |= dict(protocol or {})
    if subset is not None and subset.num_classes != num_classes:
        return subset_scores(cm.matrix.cpu(), subset, protocol=record, absent=absent)
    names = class_names if class_names is not None else (subset.names if subset is not None else None)
    record = {"class_set": subset.name if subset is not None else str(num_classes)} | record
    return scores_from_matrix(cm.matrix.cpu(), names, protocol=record, absent=absent)


@dataclass(frozen=True)
class EvalProtocol:
    """One of the field's named scoring protocols, applied by :func:`evaluate_protocol`."""

    name: str
    input_size: tuple[int, int]  # (H, W) the images are fed at
    label_size: tuple[int, int] | None  # (H, W) labels are nearest-resized to; None: scored at their own size
    flip: bool  # flip-averaged main head
    absent: Absent  # a class absent from labels and predictions: skipped ("nan") or counted as 0
    description: str


PROTOCOLS: dict[str, EvalProtocol] = {
    "maxsquare": EvalProtocol(
        "maxsquare", (512, 1024), (512, 1024), True, "nan",
        "MaxSquare/SNR/UDAclustering evaluate.py --flip True: images and labels at 1024x512 (labels nearest), "
        "flip-averaged main head"),
    "adaptsegnet": EvalProtocol(
        "adaptsegnet", (512, 1024), None, False, "nan",
        "AdaptSegNet/ADVENT: images at 1024x512, main logits upsampled (bilinear, align_corners) to the "
        "full-resolution labels, no flip"),
}


def _full_resolution_labels(loader: Iterable, input_size: tuple[int, int]) -> Iterator:
    """Yield ``loader``'s batches, refusing labels no larger than the input (they would not be full resolution)."""
    for batch in loader:
        if batch[1].shape[-2] <= input_size[0] or batch[1].shape[-1] <= input_size[1]:
            h, w = batch[1].shape[-2:]
            raise ValueError(f"the adaptsegnet protocol scores at the full-resolution labels, but this loader's are "
                             f"{w}x{h}: evaluate on cityscapes/valfull (written by data_scripts/prepare_cityscapes.py)"
                             ", or use the maxsquare protocol")
        yield batch


def evaluate_protocol(model: nn.Module, loader: Iterable, num_classes: int, protocol: str, *, model_selection: str,
                      class_set: str | int | ClassSet | None = None, device: str | torch.device = "cpu",
                      max_batches: int | None = None, progress: bool = False) -> Scores:
    """Score ``model`` under a named protocol of :data:`PROTOCOLS` (``"maxsquare"`` or ``"adaptsegnet"``).

    The two disagree on what the label resolution is, so a number means little without its protocol; nor without
    how its checkpoint was chosen (MaxSquare and UDAclustering keep the checkpoint that is best on the *target*
    val set, AdaptSegNet reports a fixed iteration), hence ``model_selection`` is required. ``Scores.protocol``
    records both, with the resolutions, flip, absent-class policy and class set (19, or "16"/"13": SYNTHIA and
    NTHU CrossCity subsets, see :func:`evaluate`).

    ``"adaptsegnet"`` needs full-resolution labels (``cityscapes/valfull``); lower-resolution ones are refused.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if not isinstance(model_selection, str) or not model_selection.strip():
        raise ValueError("state how the checkpoint was chosen, e.g. model_selection='last checkpoint' or "
                         "'best on target val (as MaxSquare)'")
    p = PROTOCOLS[protocol]
    if p.label_size is None:
        loader = _full_resolution_labels(loader, p.input_size)
    return evaluate(model, loader, num_classes, device=device, flip=p.flip, label_size=p.label_size,
                    input_size=p.input_size, class_set=class_set, absent=p.absent, max_batches=max_batches,
                    protocol={"name": p.name, "description": p.description, "model_selection": model_selection},
                    progress=progress)


@torch.no_grad()
def entropy_vs_accuracy(model: nn.Module, loader: Iterable, *, bins: tuple[float, ...] = (0, 0.1, 0.2, 0.4, 1.0),
                        device: str | torch.device = "cpu", max_batches: int | None = None):
    """How right the model is where it is confident: labelled pixels bucketed by normalised entropy.

    Returns a DataFrame with one row per bucket of :math:`H / \\log C` (main head): the share of labelled pixels
    in the bucket (%) and the pixel accuracy there (%). Entropy minimisation assumes low-entropy pixels are mostly
    right; this table checks that assumption on the data at hand.
    """
    import math

    import pandas as pd

    from ..data.batch import IGNORE_INDEX
    from ..losses import entropy_map

    edges = torch.tensor(bins, dtype=torch.float64)
    counts = torch.zeros(len(bins) - 1, dtype=torch.float64)
    correct = torch.zeros(len(bins) - 1, dtype=torch.float64)
    with eval_mode(model):
        for image, label, *_ in _batches(loader, max_batches, False):
            logits = model(image.to(device))["out"]
            ent = (entropy_map(logits) / math.log(logits.shape[1])).double().cpu()
            label = label.cpu()
            valid = label != IGNORE_INDEX
            hit = (logits.argmax(1).cpu() == label) & valid
            bucket = torch.bucketize(ent, edges[1:-1], right=True)
            counts += torch.bincount(bucket[valid], minlength=len(counts)).double()
            correct += torch.bincount(bucket[hit], minlength=len(counts)).double()
    names = [f"{lo:.1f}-{hi:.1f}" for lo, hi in zip(bins[:-1], bins[1:])]
    return pd.DataFrame({"share of pixels (%)": (100 * counts / counts.sum()).numpy(),
                         "accuracy (%)": (100 * correct / counts.clamp(min=1)).numpy()},
                        index=pd.Index(names, name="entropy / log C")).round(1)


@torch.no_grad()
def feature_sample(model: nn.Module, dataset, *, images: int = 16, per_image: int = 64, seed: int = 0) -> dict:
    """Backbone features (``model(x)["feat"]``) of the first ``images`` images of a labelled dataset, ``per_image``
    random cells each, with the label of each cell (nearest-resized to the feature grid; for analysis only) and the
    model's prediction there. Returns numpy arrays ``rows (n, F)``, ``label (n,)``, ``pred (n,)``.
    """
    from udalib.losses.clustering import classes_at_feature_grid, feature_rows, labels_at_feature_grid

    g = torch.Generator().manual_seed(seed)
    rows, labels, preds = [], [], []
    with eval_mode(model):
        for i in range(min(images, len(dataset))):
            image, label = dataset[i][:2]
            out = model(image[None])
            size = out["feat"].shape[-2:]
            r = feature_rows(out["feat"])
            lab = labels_at_feature_grid(torch.as_tensor(label)[None], size)
            pred = classes_at_feature_grid(out["out"].softmax(dim=1), size, "nearest")
            keep = torch.randperm(len(r), generator=g)[:per_image]
            rows.append(r[keep]), labels.append(lab[keep]), preds.append(pred[keep])
    return {"rows": torch.cat(rows).numpy(), "label": torch.cat(labels).numpy(), "pred": torch.cat(preds).numpy()}
