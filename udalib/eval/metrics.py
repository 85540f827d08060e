"""Segmentation metrics from a confusion matrix: per-class IoU, mIoU, pixel and mean accuracy.

All the original code bases score the same way (MaxSquare ``utils/eval.py``, AdaptSegNet ``compute_iou.py``,
MLSL ``issegm/evaluate.py``): accumulate a C x C confusion matrix
over the whole evaluation set (rows = ground truth, columns = prediction), then

.. math:: \\mathrm{IoU}_c = \\frac{TP_c}{TP_c + FP_c + FN_c}
          = \\frac{M_{cc}}{\\sum_j M_{cj} + \\sum_i M_{ic} - M_{cc}}

They differ only in what an *absent* class (no pixel in the labels and none predicted, union 0)
contributes: MaxSquare/AdaptSegNet skip it (``absent="nan"`` and a NaN-aware mean); CBST/MLSL
count it as 0 (``absent="zero"``). Which one produced a number is recorded in ``Scores.protocol``.

Every number in :class:`Scores` is a percentage (0-100).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import Tensor

from udalib.data.labels import CLASS13_IN_16, ClassSet, get_class_set

Absent = Literal["nan", "zero"]


def confusion_matrix(pred: Tensor, label: Tensor, num_classes: int) -> Tensor:
    """Count (ground truth, prediction) pairs with one ``bincount``.

    .. math:: M_{ij} = \\#\\{\\text{pixels } p : y_p = i,\\ \\hat y_p = j\\}

    Only pixels whose label lies in ``[0, C)`` are counted, so 255 (and the originals' -1) is ignored.
    Pixels whose *prediction* lies outside ``[0, C)`` (e.g. 255 "no prediction") are dropped as
    well: they cannot be placed in a C x C matrix. Map them to a class first if they should count as
    errors. (The originals' ``bincount(C*gt + pred)`` would crash or shift them into a wrong cell.)

    Shape: ``pred`` and ``label`` any equal shape, e.g. ``(N, H, W)``; returns ``(C, C)`` int64 on
    ``label``'s device.
    """
    if pred.shape != label.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and label {tuple(label.shape)} must have the same shape")
    pred, label = pred.reshape(-1).long(), label.reshape(-1).long()
    keep = (label >= 0) & (label < num_classes) & (pred >= 0) & (pred < num_classes)
    counts = torch.bincount(num_classes * label[keep] + pred[keep], minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def class_iou(cm: Tensor, absent: Absent = "nan") -> Tensor:
    """Per-class intersection over union of a confusion matrix, as a fraction in [0, 1].

    .. math:: \\mathrm{IoU}_c = \\frac{M_{cc}}{\\sum_j M_{cj} + \\sum_i M_{ic} - M_{cc}}

    A class with an empty union (absent from the labels *and* never predicted) gets NaN with
    ``absent="nan"`` (MaxSquare/AdaptSegNet: skipped by ``nanmean``) or 0 with ``absent="zero"``
    (CBST/MLSL: averaged in as a failure).

    Shape: ``(C, C)`` -> ``(C,)`` float64.
    """
    if absent not in ("nan", "zero"):
        raise ValueError(f"absent must be 'nan' or 'zero', got {absent!r}")
    cm = cm.double()
    tp = cm.diagonal()
    union = cm.sum(dim=1) + cm.sum(dim=0) - tp
    iou = tp / union  # 0/0 = NaN for absent classes
    if absent == "zero":
        iou = torch.where(union == 0, torch.zeros_like(iou), iou)
    return iou


def _nanmean(values: Tensor) -> float:
    """Mean of the non-NaN entries; NaN when there are none (no warning, unlike numpy)."""
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else math.nan


@dataclass
class Scores:
    """Evaluation result. **All numbers are percentages (0-100).**

    ``iou[c]`` is NaN for a class that is absent from labels and predictions when
    ``protocol["absent"] == "nan"``; ``miou`` is then the mean over the other classes.
    ``mean_acc`` is the mean per-class recall over classes present in the labels.
    ``extra`` holds secondary means, e.g. ``{"miou13": ...}`` when the class set is "16".
    ``protocol`` records how the number was produced (label resolution, class set, flip, absent
    policy, model selection), because the originals' protocols differ.
    """

    iou: list[float]
    miou: float
    pixel_acc: float
    mean_acc: float
    class_names: list[str]
    protocol: dict = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """A plain, JSON-friendly dict (NaN stays NaN)."""
        return asdict(self)

    def table(self):
        """Per-class IoU (%) as a ``pandas.DataFrame`` indexed by class name."""
        import pandas as pd  # lazily: pandas is only needed for display

        return pd.DataFrame({"IoU (%)": self.iou}, index=pd.Index(self.class_names, name="class"))

    def __str__(self) -> str:
        extra = "".join(f", {k} {v:.2f}" for k, v in self.extra.items())
        proto = ", ".join(f"{k}={v}" for k, v in self.protocol.items())
        counted = sum(1 for v in self.iou if not math.isnan(v))
        return (f"mIoU {self.miou:.2f}% over {counted} of {len(self.iou)} classes{extra} "
                f"(pixel acc {self.pixel_acc:.2f}%, mean acc {self.mean_acc:.2f}%) [{proto}]")


def _recall(cm: Tensor) -> Tensor:
    cm = cm.double()
    return cm.diagonal() / cm.sum(dim=1)  # NaN for classes without ground-truth pixels


def _pixel_acc(cm: Tensor) -> float:
    total = float(cm.sum())
    return 100.0 * float(cm.diagonal().sum()) / total if total else math.nan


def scores_from_matrix(cm: Tensor, class_names: Sequence[str] | None = None, protocol: dict | None = None,
                       absent: Absent = "nan") -> Scores:
    """Turn a ``(C, C)`` confusion matrix into :class:`Scores` (percentages).

    ``mIoU = nanmean_c IoU_c``; ``pixel_acc = trace(M) / sum(M)``; ``mean_acc = nanmean_c M_cc / sum_j M_cj``.
    For 16 classes, ``extra["miou13"]`` is the mean over the 13-class positions ``CLASS13_IN_16``
    (MaxSquare's ``Eval(16)`` returns both).
    """
    num_classes = cm.shape[0]
    iou = class_iou(cm, absent) * 100
    if class_names is None:  # 19, 16 and 13 classes are the field's class sets (Cityscapes, SYNTHIA, CrossCity)
        class_names = (get_class_set(num_classes).names if num_classes in (19, 16, 13)
                       else [f"class {c}" for c in range(num_classes)])
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a {num_classes}-class matrix")
    extra = {"miou13": _nanmean(iou[list(CLASS13_IN_16)])} if num_classes == 16 else {}
    return Scores(iou=iou.tolist(), miou=_nanmean(iou), pixel_acc=_pixel_acc(cm),
                  mean_acc=_nanmean(_recall(cm) * 100), class_names=list(class_names),
                  protocol={"class_set": str(num_classes), "absent": absent} | dict(protocol or {}),
                  extra=extra)


def subset_scores(cm19: Tensor, class_set: str | int | ClassSet, protocol: dict | None = None,
                  absent: Absent = "nan") -> Scores:
    """mIoU16 / mIoU13 of a *19-class* model, computed as MaxSquare does (``out_16_13=True``).

    The per-class IoUs of the full 19-class matrix are taken at the subset's trainIds and averaged:

    .. math:: \\mathrm{mIoU}_S = \\operatorname{nanmean}_{c \\in S} \\mathrm{IoU}^{(19)}_c

    So, for a subset class c, pixels of c predicted as *any* other of the 19 classes (inside or
    outside the subset) are false negatives, and pixels of *any* other ground-truth class
    (e.g. terrain) predicted as c are false positives. This is not the same as remapping labels and
    predictions to the subset first (there, terrain pixels would be ignored and not count against
    vegetation); it is the number the MaxSquare-family tables report. ``mean_acc`` is the mean recall
    over the subset; ``pixel_acc`` is over the whole 19-class matrix, again as MaxSquare computes it.

    Shape: ``cm19`` ``(19, 19)``.
    """
    class_set = get_class_set(class_set)
    if cm19.shape != (19, 19):
        raise ValueError(f"subset_scores needs a 19-class confusion matrix, got {tuple(cm19.shape)}")
    ids = list(class_set.train_ids)
    iou = (class_iou(cm19, absent) * 100)[ids]
    extra = {"miou13": _nanmean(iou[list(CLASS13_IN_16)])} if class_set.name == "16" else {}
    return Scores(iou=iou.tolist(), miou=_nanmean(iou), pixel_acc=_pixel_acc(cm19),
                  mean_acc=_nanmean(_recall(cm19)[ids] * 100), class_names=list(class_set.names),
                  protocol={"class_set": f"{class_set.name} (from 19-class matrix)", "absent": absent}
                  | dict(protocol or {}), extra=extra)


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches; ``scores()`` turns it into :class:`Scores`.

    >>> cm = ConfusionMatrix(19)
    >>> cm.update(logits.argmax(1), labels)      # (N, H, W) each, labels with 255 = ignore
    >>> cm.scores().miou
    """

    def __init__(self, num_classes: int, device: str | torch.device = "cpu"):
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: Tensor, label: Tensor) -> None:
        """Add one batch of predicted ids and labels (same shape; see :func:`confusion_matrix`)."""
        self.matrix += confusion_matrix(pred, label, self.num_classes).to(self.matrix.device)

    def reset(self) -> None:
        self.matrix.zero_()

    def scores(self, class_names: Sequence[str] | None = None, protocol: dict | None = None,
               absent: Absent = "nan") -> Scores:
        """Scores of everything accumulated so far (percentages)."""
        return scores_from_matrix(self.matrix.cpu(), class_names, protocol, absent)
