"""MinEnt -- entropy minimisation on target predictions (Vu et al., "ADVENT", CVPR 2019, Eq. 3), as the
MaxSquare code base runs it (``--target_mode entropy``, its ``softCrossEntropy``)."""

from __future__ import annotations

import math
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

Normalization = Literal["original", "log_c"]


def entropy_map(logits: Tensor) -> Tensor:
    r"""Shannon entropy (natural log) of every pixel's class posterior.

    .. math:: E^{(h,w)} = -\sum_{c=1}^{C} P^{(h,w,c)} \log P^{(h,w,c)}, \qquad P = \mathrm{softmax}(x)

    Shape:
        logits ``(N, C, H, W)`` -> ``(N, H, W)``, values in ``[0, log C]``.
    """
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def entropy_loss(logits: Tensor, normalization: Normalization = "original") -> Tensor:
    r"""MinEnt objective: the mean pixel entropy of the target predictions, to be minimised.

    .. math::
        \mathcal{L}_{ent} = \frac{1}{Z\,NHW} \sum_{n,h,w} E^{(n,h,w)}, \qquad
        Z = \begin{cases} C & \text{"original"} \\ \log C & \text{"log\_c"} \end{cases}

    ``"original"`` is what the original MaxSquare code computes (``ZJULearning/MaxSquareLoss``, its
    ``softCrossEntropy``): the mean over all ``N·C·H·W`` entries of :math:`-P \log P`, i.e. the entropy divided by
    the number of classes :math:`C` (its ``lambda_target`` values are tuned for this); ``"seed"``, the spelling
    stored run configs hold, means the same. ``"log_c"`` is ADVENT's normalisation, entropy in ``[0, 1]``; the two
    differ by the constant factor :math:`C / \log C`. The posterior is not detached: the gradient is the full
    entropy gradient.

    Shape:
        logits ``(N, C, H, W)`` -> scalar.
    """
    ent = entropy_map(logits)
    if normalization not in ("original", "seed", "log_c"):
        raise ValueError(f"normalization must be 'original' or 'log_c', got {normalization!r}")
    scale = math.log(logits.shape[1]) if normalization == "log_c" else logits.shape[1]
    return ent.mean() / scale
