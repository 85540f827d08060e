"""AdaBN -- Li et al., "Revisiting Batch Normalization For Practical Domain Adaptation", ICLRW 2017.

Not a training method but the control every MiniCity table needs: keep the source model's weights and
re-estimate only the BatchNorm running statistics on target images. Any method that trains on target
batches moves those statistics too, so a gain is real only if it beats this.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, loader, *, device: str | torch.device = "cpu",
                    max_batches: int | None = None) -> nn.Module:
    r"""Replace every BatchNorm's running mean and variance by their average over target batches.

    .. math:: \mu_c = \frac{1}{K}\sum_{k=1}^{K} \mu_c^{(k)}, \qquad \sigma_c^2 = \frac{1}{K}\sum_k \sigma_c^{2\,(k)}

    (PyTorch's cumulative average, ``momentum=None``, over ``K`` batches). Weights are untouched. The loader
    yields ``(image, ...)`` tuples; labels, if any, are never read.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ValueError("adapt_batchnorm: the model has no BatchNorm layer to adapt")
    saved = [(m.momentum, m.training) for m in bns]
    was_training = model.training
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
        m.train()
    for k, batch in enumerate(loader):
        if max_batches is not None and k >= max_batches:
            break
        model(batch[0].to(device))
    for m, (momentum, training) in zip(bns, saved):
        m.momentum = momentum
        m.train(training)
    model.train(was_training)
    return model
