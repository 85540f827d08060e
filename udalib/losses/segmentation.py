"""The supervised loss every method uses on labelled pixels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..data.batch import IGNORE_INDEX


def seg_loss(logits: Tensor, label: Tensor) -> Tensor:
    r"""Pixel-wise cross-entropy averaged over labelled pixels (``IGNORE_INDEX`` excluded).

    .. math:: \mathcal{L}_{seg} = -\frac{1}{|\Omega|} \sum_{(h,w) \in \Omega} \log P^{(h,w,y_{h,w})}

    where :math:`\Omega` is the set of pixels whose label is not ignored. A batch without any labelled
    pixel gives 0 (with a gradient), not NaN.

    Shape:
        logits ``(N, C, H, W)``, label ``(N, H, W)`` int64.
    """
    if not (label != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX)
