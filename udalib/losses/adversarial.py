"""AdaptSegNet -- Tsai et al., "Learning to Adapt Structured Output Space for Semantic Segmentation", CVPR 2018:
the adversarial losses of the discriminator (Eq. 2) and of the segmenter (Eq. 4), vanilla GAN or least squares.

Label convention of the original (``source_label = 0``, ``target_label = 1``): the discriminator learns to output
``SOURCE`` on source maps and ``TARGET`` on target maps; the segmenter is rewarded when its target maps are
classified ``SOURCE``.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

SOURCE, TARGET = 0.0, 1.0
GanKind = Literal["vanilla", "ls"]


def gan_loss(d_logits: Tensor, domain: float, kind: GanKind = "vanilla") -> Tensor:
    r"""How far the discriminator's patch logits are from the domain label ``domain``, averaged over patches.

    .. math::
        \text{vanilla } (\texttt{--gan Vanilla}):\ \ \ell = -\frac{1}{|D|}\sum_{h,w}
            \big[z \log \sigma(D^{(h,w)}) + (1 - z) \log (1 - \sigma(D^{(h,w)}))\big]

        \text{least squares } (\texttt{--gan LS}):\ \ \ell = \frac{1}{|D|}\sum_{h,w} \big(D^{(h,w)} - z\big)^2

    with :math:`z` = ``domain`` (``SOURCE`` = 0 or ``TARGET`` = 1) and :math:`D` the raw logits: binary
    cross-entropy with logits, or the mean squared error on the logits themselves (no sigmoid), as in the original.

    Shape:
        d_logits ``(N, 1, h, w)`` -> scalar.
    """
    target = d_logits.new_full(d_logits.shape, domain)
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(d_logits, target)
    if kind == "ls":
        return F.mse_loss(d_logits, target)
    raise ValueError(f"GAN kind must be 'vanilla' or 'ls', got {kind!r}")


def discriminator_loss(d_source: Tensor, d_target: Tensor, kind: GanKind = "vanilla") -> Tensor:
    r"""Eq. (2): the discriminator separates the domains, each term halved as in the original.

    .. math:: \mathcal{L}_d = \tfrac12\,\ell(D(P_s), \text{SOURCE}) + \tfrac12\,\ell(D(P_t), \text{TARGET})

    Shape:
        d_source, d_target ``(N, 1, h, w)`` logits of the discriminator on detached softmax maps -> scalar.
    """
    return 0.5 * (gan_loss(d_source, SOURCE, kind) + gan_loss(d_target, TARGET, kind))


def adversarial_loss(d_target: Tensor, kind: GanKind = "vanilla") -> Tensor:
    r"""Eq. (4): the segmenter fools the (frozen) discriminator, its target maps labelled as source.

    .. math:: \mathcal{L}_{adv} = \ell(D(P_t), \text{SOURCE})

    Shape:
        d_target ``(N, 1, h, w)`` logits of the discriminator on target softmax maps -> scalar.
    """
    return gan_loss(d_target, SOURCE, kind)
