"""MaxSquare -- Chen, Xue, Cai, "Domain Adaptation for Semantic Segmentation with Maximum Squares Loss",
ICCV 2019: the maximum squares loss (Eq. 5), image-wise class-balanced weights (IW, Eq. 7) and the multi-level
self-produced guidance (Sec. 3.4). Normalisations follow the MaxSquare code base (``utils/loss.py``), for which
its ``lambda_target`` values were tuned."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.batch import IGNORE_INDEX
from .segmentation import seg_loss


def maxsquare_loss(logits: Tensor) -> Tensor:
    r"""Maximum squares loss, to be minimised.

    .. math:: \mathcal{L}_{ms} = -\frac{1}{2}\,\frac{1}{NCHW} \sum_{n,c,h,w} \big(P^{(n,h,w,c)}\big)^2

    The original averages over all ``N·C·H·W`` entries, so this is :math:`1/C` times the paper's per-pixel sum over
    classes (Eq. 5). For a two-class pixel with top probability :math:`p`, the gradient along :math:`p` is
    :math:`2p - 1` (up to the normalisation): it grows linearly, where entropy's, :math:`\log\frac{p}{1-p}`, grows
    without bound as :math:`p \to 1`, so easy, confident pixels stop dominating the gradient (the paper's
    argument, plotted in notebook 04). The posterior is not detached.

    Shape:
        logits ``(N, C, H, W)`` -> scalar.
    """
    p = F.softmax(logits, dim=1)
    return -0.5 * p.pow(2).mean()


def image_wise_class_weights(logits: Tensor, ratio: float = 0.2) -> Tensor:
    r"""Per-pixel weight of the image-wise class-balanced MaxSquare (IW), detached.

    .. math:: w^{(n,h,w)} = \frac{1}{\max\!\big(N_{n,\hat y}^{\,r}\; (HW)^{1-r},\; 1\big)}, \qquad
              \hat y = \arg\max_c P^{(n,h,w,c)}

    where :math:`N_{n,k}` counts the pixels of image ``n`` predicted as class ``k`` and ``r`` is ``ratio``
    (the paper's :math:`\alpha`, ``--IW_ratio``). Classes predicted on few pixels get larger weights. As in the
    original (``torch.pow``), :math:`0^0 = 1`: with ``ratio = 0`` every pixel weighs :math:`1/(HW)`. Counting is per
    image, so a batch gives each image the weights it would get alone (the original breaks for batch > 1).

    Shape:
        logits ``(N, C, H, W)`` -> ``(N, H, W)``.
    """
    n, c, h, w = logits.shape
    pred = logits.detach().argmax(dim=1).flatten(1)  # (N, HW)
    counts = F.one_hot(pred, c).sum(dim=1).to(logits.dtype)  # (N, C)
    per_class = 1 / torch.clamp(counts.pow(ratio) * float(h * w) ** (1 - ratio), min=1)
    return per_class.gather(1, pred).view(n, h, w)


def iw_maxsquare_loss(logits: Tensor, ratio: float = 0.2) -> Tensor:
    r"""Image-wise class-balanced maximum squares loss, to be minimised.

    .. math:: \mathcal{L}_{iw} = -\frac{1}{NC} \sum_{n,c,h,w} \big(P^{(n,h,w,c)}\big)^2\, w^{(n,h,w)}

    with :math:`w` from :func:`image_wise_class_weights`. As in the original there is no factor 1/2 and the sum is
    divided by ``N·C``; for a batch it equals the mean of the per-image losses.

    Shape:
        logits ``(N, C, H, W)`` -> scalar.
    """
    n, c = logits.shape[:2]
    p = F.softmax(logits, dim=1)
    weights = image_wise_class_weights(logits, ratio)
    return -(p.pow(2) * weights[:, None]).sum() / (n * c)


def iw_entropy_loss(logits: Tensor, ratio: float = 0.2) -> Tensor:
    r"""Image-wise class-balanced entropy loss (the MaxSquare code base's ``--target_mode IW_entropy``), to be
    minimised.

    .. math:: \mathcal{L}_{iw\text{-}ent} = \frac{1}{NC} \sum_{n,h,w} w^{(n,h,w)}
              \Big(-\sum_{c} P^{(n,h,w,c)} \log P^{(n,h,w,c)}\Big)

    with :math:`w` from :func:`image_wise_class_weights` (the original builds its histogram from the argmax of the
    logits, the same classes as of :math:`P`). As the original's ``IWsoftCrossEntropy`` (``ZJULearning/MaxSquareLoss``
    ``utils/loss.py``, lines 37-67): the sum is divided by ``N·C``, and :math:`P` is not detached (the gradient is
    the full weighted entropy gradient); the weights are. At ``ratio = 1`` every weight is :math:`1/N_{n,\hat y}`.

    Shape:
        logits ``(N, C, H, W)`` -> scalar.
    """
    n, c = logits.shape[:2]
    log_p = F.log_softmax(logits, dim=1)
    weights = image_wise_class_weights(logits, ratio)
    return -(log_p.exp() * log_p * weights[:, None]).sum() / (n * c)


def hard_pseudo_label_loss(logits: Tensor, threshold: float = 0.95) -> Tensor:
    r"""Thresholded self-training (the MaxSquare code base's ``--target_mode hard``): cross-entropy towards the
    prediction's own confident argmax, to be minimised.

    .. math:: \mathcal{L}_{hard} = -\frac{1}{|\Omega|} \sum_{(n,h,w) \in \Omega} \log P^{(n,h,w,\hat y)},
              \qquad \hat y = \arg\max_c P^{(n,h,w,c)}, \quad
              \Omega = \{(n,h,w) : \max_c P^{(n,h,w,c)} > \tau\}

    with :math:`\tau` = ``threshold`` (``--threshold``, strictly greater; the labels detached), as
    ``ZJULearning/MaxSquareLoss`` ``tools/solve_gta5.py`` (lines 245-259). A batch without any confident pixel
    gives 0 (with a gradient) where the original's ``nn.CrossEntropyLoss`` gives NaN.

    Shape:
        logits ``(N, C, H, W)`` -> scalar.
    """
    with torch.no_grad():
        confidence, label = F.softmax(logits, dim=1).max(dim=1)
        label = torch.where(confidence > threshold, label, torch.full_like(label, IGNORE_INDEX))
    return seg_loss(logits, label)


def self_produced_guidance(main_logits: Tensor, aux_logits: Tensor, threshold: float = 0.95) -> Tensor:
    r"""Pseudo-labels for the auxiliary head from both heads' confident predictions (multi-level guidance).

    .. math::
        \tilde y^{(h,w)} = \begin{cases} \arg\max_c \tfrac12\big(P^{(h,w,c)} + P_{aux}^{(h,w,c)}\big)
        & \text{if } \max_c P^{(h,w,c)} > \tau \ \text{or}\ \max_c P_{aux}^{(h,w,c)} > \tau \\
        \text{ignore} & \text{otherwise} \end{cases}

    with :math:`\tau` = ``threshold``. The method adds :math:`\lambda_{seg}\lambda_{target}\,
    \mathcal{L}_{seg}(aux, \tilde y)`. Computed without gradient.

    Shape:
        logits ``(N, C, H, W)`` each -> labels ``(N, H, W)`` int64, ``IGNORE_INDEX`` where not confident.
    """
    with torch.no_grad():
        p_main, p_aux = F.softmax(main_logits, dim=1), F.softmax(aux_logits, dim=1)
        confident = (p_main.amax(dim=1) > threshold) | (p_aux.amax(dim=1) > threshold)
        label = ((p_main + p_aux) / 2).argmax(dim=1)
        return torch.where(confident, label, torch.full_like(label, IGNORE_INDEX))
