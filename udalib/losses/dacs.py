"""DACS -- Tranheden, Olsson, Pinto, Svensson, "DACS: Domain Adaptation via Cross-domain Mixed Sampling", WACV
2021: ClassMix across domains (Sec. 3.2), the confidence weight of the pseudo-labels and the pixel-weighted
cross-entropy on the mixed images, as ``vikolss/DACS`` computes them (``trainUDA.py``, ``utils/transformmasks.py``,
``utils/transformsgpu.py``, ``utils/loss.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.batch import IGNORE_INDEX


def class_mix_classes(label: Tensor, mix_ignore: bool = True, generator: torch.Generator | None = None) -> Tensor:
    r"""The classes of one source label that ClassMix pastes: :math:`\lceil n/2 \rceil = (n + n \bmod 2)/2` of
    the :math:`n` classes present in ``label``, drawn uniformly without replacement (``trainUDA.py``:426-430).

    ``mix_ignore``: count the ignore label 255 among the present classes, as the original does (its filter,
    ``classes = classes[classes != ignore_label]``, is commented out at line 427); when drawn, the source's
    unlabelled pixels are pasted too, with label 255 (no loss there). False: only real classes.

    Shape:
        label ``(H, W)`` int64 -> ``(k,)`` int64.
    """
    classes = torch.unique(label)
    if not mix_ignore:
        classes = classes[classes != IGNORE_INDEX]
    n = len(classes)
    pick = torch.randperm(n, generator=generator, device="cpu")[: (n + n % 2) // 2]
    return classes[pick.to(classes.device)]


def class_mix_mask(label: Tensor, classes: Tensor) -> Tensor:
    r""":math:`M^{(h,w)} = [y_s^{(h,w)} \in \text{classes}]`: where the source image is pasted
    (``transformmasks.generate_class_mask``).

    Shape:
        label ``(H, W)``, classes ``(k,)`` -> ``(H, W)`` bool.
    """
    return torch.isin(label, classes)


def mix(mask: Tensor, source: Tensor, target: Tensor) -> Tensor:
    r""":math:`M \odot x_s + (1 - M) \odot x_t` per image (``transformsgpu.oneMix``): images ``(N, 3, H, W)``,
    labels ``(N, H, W)`` or weights alike; ``mask`` ``(N, H, W)`` bool."""
    m = mask if source.dim() == mask.dim() else mask[:, None]
    return torch.where(m, source, target)


def confidence_weight(confidence: Tensor, threshold: float = 0.968) -> Tensor:
    r"""The weight of every pseudo-labelled pixel of a batch: the share of its target pixels whose top teacher
    probability reaches the threshold (``pixel_weight: "threshold_uniform"``, ``trainUDA.py``:466-468).

    .. math:: w_t = \frac{1}{NHW} \sum_{n,h,w} \big[\max_c P_T^{(n,h,w,c)} \ge \tau\big]

    One number per batch, not per pixel: a confident teacher makes its pseudo-labels count more.

    Shape:
        confidence ``(N, H, W)`` (the teacher's top probability) -> scalar, detached.
    """
    return (confidence.detach() >= threshold).float().mean()


def teacher_pseudo_labels(teacher_logits: Tensor, threshold: float = 0.968) -> tuple[Tensor, Tensor]:
    r"""The teacher's pseudo-labels :math:`\hat y = \arg\max_c P_T` of the target images, and their weight, the
    batch's share of pixels with :math:`\max_c P_T \ge \tau` (:func:`confidence_weight`): DACS's :math:`w_t`
    (``trainUDA.py``:466-468) and MIC's :math:`q_T` (``EMATeacher.get_pseudo_label_and_weight``,
    ``teacher_module.py``:75-86).

    Shape:
        ``(N, C, H, W)`` -> ``(N, H, W)`` int64, scalar.
    """
    confidence, pseudo = teacher_logits.detach().softmax(dim=1).max(dim=1)
    return pseudo, confidence_weight(confidence, threshold)


def pixel_weighted_ce(logits: Tensor, label: Tensor, weight: Tensor) -> Tensor:
    r"""Cross-entropy with a weight per pixel, averaged over *all* pixels (``CrossEntropyLoss2dPixelWiseWeighted``,
    ``utils/loss.py``:35-44): an ignored pixel adds 0 to the sum and still counts in the denominator.

    .. math:: \mathcal{L}_{mix} = -\frac{1}{NHW} \sum_{n,h,w} w^{(n,h,w)}\, \log P^{(n,h,w,y_{n,h,w})}
              \qquad (y = 255 \text{ contributes } 0)

    With the DACS weights, :math:`w = 1` where the source was pasted and :math:`w = w_t`
    (:func:`confidence_weight`) on the target's pseudo-labels: the second term of the paper's
    :math:`\mathcal{L}(\theta) = \mathbb{E}\big[H(f_\theta(X_S), Y_S) + \lambda H(f_\theta(X_M), Y_M)\big]`.

    Shape:
        logits ``(N, C, H, W)``, label ``(N, H, W)`` int64, weight ``(N, H, W)`` -> scalar.
    """
    ce = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="none")  # (N, H, W), 0 where ignored
    return (ce * weight.detach()).mean()
