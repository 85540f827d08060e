"""MIC -- Hoyer, Dai, Wang, Van Gool, "MIC: Masked Image Consistency for Context-Enhanced Domain Adaptation", CVPR
2023: the segmenter must predict, from a target image with most of its blocks masked out, the teacher's
pseudo-labels of the whole image, so it learns to use the context that survives the mask. As ``lhoyer/MIC``
computes it (``seg/mmseg/models/utils/masking_transforms.py``, ``seg/mmseg/models/uda/masking_consistency_module.py``,
``seg/mmseg/models/uda/teacher_module.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .dacs import pixel_weighted_ce, teacher_pseudo_labels

__all__ = ["block_mask", "mask_image", "masked_consistency_loss", "teacher_pseudo_labels"]


def block_mask(shape: tuple[int, ...], ratio: float, block: int,
               generator: torch.Generator | None = None) -> Tensor:
    r"""MIC's keep-mask (Sec. 3.2): the image cut into ``block`` x ``block`` patches, each kept with probability
    :math:`1 - r` (``BlockMaskGenerator.generate_mask``, ``masking_transforms.py``:25-34):

    .. math:: \mathcal{M}_{mb+1:(m+1)b,\,nb+1:(n+1)b} = [v_{mn} > r], \qquad v_{mn} \sim \mathcal{U}(0, 1)

    As the original, the grid has ``round(H / b)`` x ``round(W / b)`` cells, resized to ``(H, W)`` by nearest
    neighbour (blocks of uneven size where ``b`` does not divide the side). Drawn on the CPU (from ``generator``,
    else torch's global generator, which a training checkpoint saves), so every device draws the same masks.

    Shape:
        ``shape``: ``(N, ..., H, W)`` (an image batch's) -> ``(N, 1, H, W)`` float, 1 = kept, 0 = masked.
    """
    n, (h, w) = shape[0], shape[-2:]
    cells = torch.rand((n, 1, max(round(h / block), 1), max(round(w / block), 1)), generator=generator)
    return F.interpolate((cells > ratio).float(), size=(h, w), mode="nearest")


def mask_image(images: Tensor, keep: Tensor) -> Tensor:
    r""":math:`x^M = \mathcal{M} \odot x`: masked pixels are 0 in the normalised image, i.e. the dataset's mean
    colour (``mask_image``, ``masking_transforms.py``:36-39)."""
    return images * keep.to(images.device, images.dtype)


def masked_consistency_loss(masked_logits: Tensor, pseudo: Tensor, weight: Tensor) -> Tensor:
    r"""MIC's loss (Sec. 3.2): the student's prediction on the masked image against the teacher's pseudo-labels of the
    full image, each pixel weighted by :math:`q_T`, the CE averaged over all pixels (mmseg's ``seg_weight``):

    .. math:: \mathcal{L}^M = -\frac{1}{NHW} \sum_{n,h,w} q_T \log g_\theta(x^M)^{(n,h,w,\hat y_{n,h,w})}

    Shape:
        masked_logits ``(N, C, H, W)``, pseudo ``(N, H, W)``, weight scalar or ``(N, H, W)`` -> scalar.
    """
    return pixel_weighted_ce(masked_logits, pseudo, weight.expand_as(pseudo))
