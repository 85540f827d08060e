"""The mean teacher -- Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017: a copy of the
segmenter whose weights are an exponential moving average of the segmenter's, as DACS runs it (``vikolss/DACS``
``trainUDA.py``: ``create_ema_model`` lines 89-109, ``update_ema_variables`` lines 111-122, called after every
optimiser step at lines 508-511)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .base import frozen_running_stats


class MeanTeacher(nn.Module):
    r"""An EMA copy of ``model``, updated after each step of the segmenter:

    .. math:: \theta'_t = \alpha_t\,\theta'_{t-1} + (1 - \alpha_t)\,\theta_t, \qquad
              \alpha_t = \min\!\big(1 - \tfrac{1}{t + 1},\ \alpha\big)

    with :math:`t` the number of updates before this one (the original's ``i_iter``, from 0): the first update
    copies the segmenter (:math:`\alpha_0 = 0`) and, until :math:`1 - 1/(t+1)` reaches :math:`\alpha`, the teacher
    is the plain average of the segmenter's weights so far (the original's "true average"). The counter
    ``updates`` is a buffer, so a checkpoint holds it with the teacher's weights and a resumed run goes on with the
    same :math:`\alpha_t`.

    **What is averaged**: the parameters only, as the original (``ema_model.parameters()``), frozen BatchNorm
    affine parameters included. BatchNorm buffers are never averaged: the original builds a fresh network, copies
    the parameters into it and never copies a buffer; here the teacher starts as a full copy of the segmenter
    (its buffers too), and they stay as copied.

    **BatchNorm**: the teacher runs in train mode, so every BatchNorm layer normalises with the statistics of the
    batch it is given: the target batch (the original calls ``ema_model.train()``, line 265, and never
    ``eval()``). Its running statistics are therefore never read; the original's train-mode forwards keep
    updating them to no effect, here they are left alone (:func:`frozen_running_stats`). The teacher's output is
    computed without gradient.
    """

    def __init__(self, model: nn.Module, alpha: float = 0.99):
        super().__init__()
        if not 0 <= alpha < 1:
            raise ValueError(f"the mean teacher's alpha must be in [0, 1), got {alpha}")
        self.alpha = alpha
        self.ema = copy.deepcopy(model).requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def decay(self) -> float:
        """:math:`\\alpha_t` of the next update."""
        return min(1 - 1 / (int(self.updates) + 1), self.alpha)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the teacher's parameters towards ``model``'s by :math:`1 - \\alpha_t`."""
        a = self.decay()
        for ema, p in zip(self.ema.parameters(), model.parameters(), strict=True):
            ema.copy_(a * ema + (1 - a) * p.detach())
        self.updates += 1

    @torch.no_grad()
    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """The teacher's outputs on ``image``, normalised with the batch's own BatchNorm statistics."""
        self.ema.train()
        with frozen_running_stats(self.ema):
            return self.ema(image)
