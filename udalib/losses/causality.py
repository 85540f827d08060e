"""SNR's dual causality loss (Jin et al., arXiv 2101.00588, Sec. 3.2, Eq. 4-5), for segmentation.

The reference segmentation code defines it (``PixelWiseCausalityLoss``) but never calls it, and its ``forward``
would raise (``microsoft/SNR`` ``segmentation/``). The classification code (``PACS/model_resnet.py``) is what
actually runs:
classify globally pooled features with a per-stage linear layer, compare entropies. udalib's segmentation
version ("paper mode", our design, labelled as such) classifies every pixel with a per-stage 1x1 conv and uses
the pixel-mean entropy.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .entropy import entropy_map


def mean_pixel_entropy(logits: Tensor) -> Tensor:
    r"""Entropy of each pixel's class posterior (natural log), averaged over the batch and the pixels.

    .. math:: H(p) = -\frac{1}{NHW}\sum_{n,h,w}\sum_{c} p_{n,c,h,w}\log p_{n,c,h,w}

    (The reference's ``get_entropy_at_each_position`` sums over pixels and divides by the batch size only;
    the mean keeps the loss's scale independent of the feature-map size.)

    Shape:
        logits ``(N, C, H, W)`` -> scalar in ``[0, log C]``.
    """
    return entropy_map(logits).mean()


def dual_causality_loss(logits_normalized: Tensor, logits_enhanced: Tensor, logits_contaminated: Tensor) -> Tensor:
    r"""Dual causality loss of one SNR block: restitution of :math:`R^+` must make predictions *more* certain
    than the instance-normalized features, and :math:`R^-` *less* certain.

    .. math::
        \mathcal{L}_{caus} = \mathrm{Softplus}\big(H(\phi(\tilde F^+)) - H(\phi(\tilde F))\big)
                           + \mathrm{Softplus}\big(H(\phi(\tilde F)) - H(\phi(\tilde F^-))\big)

    with :math:`\phi` a classifier of the stage's features and :math:`H` :func:`mean_pixel_entropy`.
    :math:`\mathrm{Softplus}(d) = \log(1 + e^{d})` is the reference's ``SoftMarginLoss(x, 1)`` with
    :math:`x = -d`; it is :math:`\log 2` when the entropies are equal, tends to 0 when
    :math:`H^+ < H_{IN} < H^-` by a margin, and grows linearly when the order is reversed.

    Shape:
        three logits ``(N, C, H, W)`` (the same classifier on :math:`\tilde F, \tilde F^+, \tilde F^-`) -> scalar.
    """
    h_in = mean_pixel_entropy(logits_normalized)
    h_plus = mean_pixel_entropy(logits_enhanced)
    h_minus = mean_pixel_entropy(logits_contaminated)
    return F.softplus(h_plus - h_in) + F.softplus(h_in - h_minus)
