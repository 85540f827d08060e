"""Two test-time baselines that never read a source batch: TENT and BN-alpha.

* TENT -- Wang et al., "Tent: Fully Test-Time Adaptation by Entropy Minimization", ICLR 2021: train only the
  BatchNorm affine parameters on the target's mean entropy, normalising with target batch statistics.
* BN-alpha -- Schneider et al., "Improving robustness against common corruptions by covariate shift adaptation",
  NeurIPS 2020: no training; BatchNorm statistics are a mixture of the source's and the target's.

Both start from a trained source model (``Experiment.init``) and run on the shared loop, which still draws source
batches (``uses_source = False``: they are never forwarded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..data.batch import SourceBatch, TargetBatch
from ..losses import entropy_map
from .base import MINICITY_LR, Method, keyed_off_default, set_requires_grad


def batchnorms(model: nn.Module, method: str) -> list[nn.modules.batchnorm._BatchNorm]:
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ValueError(f"method {method!r} adapts BatchNorm layers, and {type(model).__name__} has none: use a "
                         "model with BatchNorm (minideeplab, deeplabv2*)")
    return bns


def _need_target(tgt: TargetBatch | None, method: str) -> TargetBatch:
    if tgt is None:
        raise ValueError(f"method {method!r} adapts to target images: give a target set (e.g. --target "
                         "minicity:target)")
    return tgt


@dataclass
class TentConfig:
    # no target loss weight: TENT reads no source batch, so its control is AdaBN itself (no lambda = 0 run)
    TARGET_WEIGHTS: ClassVar[tuple[str, ...]] = ()
    # MiniCity, from the source run (init; bn_stats "target"), target val mIoU of seeds 0/1/2, one run each: at the lr
    # the other MiniCity adaptations use, 60 steps: 49.3/44.6/47.2 (the paper's 2.5e-4: 48.6/44.3/45.6)
    PRESETS: ClassVar[dict[str, dict]] = {"minicity": {"lr": MINICITY_LR}}
    # SGD on the BatchNorm affine parameters only, momentum 0.9 at 2.5e-4: the TENT code base's ImageNet-C setting
    # (batch 64; its CIFAR setting is Adam at 1e-3) and the base lr of the original DeepLab segmentation code bases.
    # No weight decay, as in that code base. The shared loop decays lr by the poly rule (the paper keeps it constant)
    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 0.0


class Tent(Method):
    r"""TENT: minimise the mean pixel entropy of the target predictions over the BatchNorm affine parameters.

    .. math::
        \min_{\gamma, \beta} \; \frac{1}{NHW} \sum_{n,h,w} H\big(p^{(n,h,w)}\big), \qquad
        H(p) = -\sum_{c} p_c \log p_c, \qquad p = \mathrm{softmax}\big(f_{\theta, \gamma, \beta}(x_t)\big)

    with every other weight :math:`\theta` frozen and BatchNorm in train mode, so each target batch is normalised
    with its own statistics (:math:`\mu_t, \sigma_t^2`) as in the paper. Natural log, not divided by :math:`C`
    (MinEnt's ``"original"`` normalisation): the paper's objective as written. Source batches are ignored (source
    weight 0). Unlike the paper's online setting, evaluation runs in eval mode with the running statistics,
    which the target batches have moved to the target's (an exponential average, PyTorch's momentum 0.1: after
    ``k`` steps the source statistics keep a weight :math:`0.9^k`).
    """

    uses_source = False

    def __init__(self, model, cfg: TentConfig | None = None):
        super().__init__(model, cfg or TentConfig())
        c = self.cfg
        params = [p for m in batchnorms(model, "tent") if m.affine for p in (m.weight, m.bias)]
        if not params:
            raise ValueError("method 'tent' trains BatchNorm affine parameters, and this model's BatchNorm layers "
                             "have none (affine=False): use a model with affine BatchNorm")
        set_requires_grad(model, False)
        for p in params:
            p.requires_grad_(True)
        self.optimizers["model"] = torch.optim.SGD([{"params": params, "lr": c.lr, "lr_mult": 1.0}], lr=c.lr,
                                                   momentum=c.momentum, weight_decay=c.weight_decay)

    def step(self, src: SourceBatch | None, tgt: TargetBatch | None) -> dict[str, float]:
        tgt = _need_target(tgt, "tent")
        l_ent = entropy_map(self.model(tgt.image)["out"]).mean()
        self.update(self.optimizers["model"], l_ent)
        return {"ent": l_ent.item()}


@dataclass
class BNAlphaConfig:
    TARGET_WEIGHTS: ClassVar[tuple[str, ...]] = ()  # trains nothing: its controls are AdaBN (alpha 1) and the source
    # MiniCity, 20 batches of 8, target val mIoU of seeds 0/1/2: alpha 0.5: 42.1/32.7/40.2, at 1 (AdaBN):
    # 48.7/44.2/46.1. With 160 target images the paper's weight n / (N + n) is near 1 for any small prior N
    # (prior_strength 16: 160/176 = 0.91); the fixed alpha 0.5 stays the preset so that the row is not AdaBN again,
    # and tables name it "alpha = 0.5"
    PRESETS: ClassVar[dict[str, dict]] = {"minicity": {"alpha": 0.5}}
    # weight of the target estimate when prior_strength is None: 1 is AdaBN, 0 the source model
    alpha: float = 0.5
    # N, the strength of the source prior in images: alpha = n / (N + n) after n target images (bethgelab/robustness
    # examples/batchnorm/src/evaluate.py:343-346 writes the source's share, N / (N + n), with n the batch size)
    prior_strength: float | None = keyed_off_default(None)


class BNAlpha(Method):
    r"""BN-:math:`\alpha`: every BatchNorm's running statistics become a mixture of the source's and the target's.

    .. math::
        \bar\mu = (1 - \alpha)\, \mu_s + \alpha\, \hat\mu_t, \qquad
        \bar\sigma^2 = (1 - \alpha)\, \sigma_s^2 + \alpha\, \hat\sigma_t^2, \qquad
        \alpha = \frac{n}{N + n}

    where :math:`\mu_s, \sigma_s^2` are the running statistics of the model the method was built on (the source
    model), and :math:`\hat\mu_t, \hat\sigma_t^2` the average of the per-batch statistics of the target batches
    seen so far (PyTorch's cumulative average, as :func:`~udalib.methods.adabn.adapt_batchnorm`; variances
    unbiased). The paper writes the weight as :math:`N/(N+n)` on the source, with :math:`n` target images and a
    prior strength :math:`N`: with ``prior_strength`` = :math:`N` the weight follows :math:`n`, the target images
    seen so far (the original applies it to each test batch alone, :math:`n` = its batch size; here the target
    estimate accumulates, so :math:`n` grows with it); without it :math:`\alpha` is given directly. No weight is
    trained: each ``step`` adds one target batch to the estimate and rewrites the mixture, so any number of steps
    ends with it in place (run ``steps`` = the number of target batches to estimate from, from a source model as
    ``init``).
    """

    uses_source = False

    def __init__(self, model, cfg: BNAlphaConfig | None = None):
        super().__init__(model, cfg or BNAlphaConfig())
        alpha, prior = self.cfg.alpha, self.cfg.prior_strength
        if not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
            raise ValueError(f"alpha={alpha!r} must lie in [0, 1] (the weight of the target statistics; n/(N+n))")
        if prior is not None and not (isinstance(prior, (int, float)) and prior >= 0):
            raise ValueError(f"prior_strength={prior!r} must be a number of images >= 0 (N of alpha = n/(N+n)), "
                             f"or null to give alpha directly")
        self._bns = batchnorms(model, "bn_alpha")
        if any(m.running_mean is None for m in self._bns):
            raise ValueError("method 'bn_alpha' mixes running statistics, and a BatchNorm layer of this model "
                             "tracks none (track_running_stats=False)")
        for i, m in enumerate(self._bns):
            self.register_buffer(f"source_mean_{i}", m.running_mean.detach().clone())
            self.register_buffer(f"source_var_{i}", m.running_var.detach().clone())
            self.register_buffer(f"target_mean_{i}", torch.zeros_like(m.running_mean))
            self.register_buffer(f"target_var_{i}", torch.zeros_like(m.running_var))
        self.register_buffer("target_batches", torch.zeros((), dtype=torch.long))
        self.register_buffer("target_images", torch.zeros((), dtype=torch.long))

    def weight(self, images: int) -> float:
        """:math:`\\alpha` after ``images`` target images: :math:`n/(N+n)` with ``prior_strength`` = :math:`N`, else
        the configured ``alpha``."""
        n, prior = images, self.cfg.prior_strength
        return float(self.cfg.alpha) if prior is None else n / (prior + n) if prior + n > 0 else 1.0

    @torch.no_grad()
    def step(self, src: SourceBatch | None, tgt: TargetBatch | None) -> dict[str, float]:
        tgt = _need_target(tgt, "bn_alpha")
        k = int(self.target_batches)
        a = self.weight(int(self.target_images) + tgt.image.shape[0])
        saved = [(m.momentum, m.training) for m in self._bns]
        for i, m in enumerate(self._bns):  # continue the cumulative average of the target batches so far
            m.running_mean.copy_(getattr(self, f"target_mean_{i}"))
            m.running_var.copy_(getattr(self, f"target_var_{i}"))
            m.num_batches_tracked.fill_(k)
            m.momentum = None
            m.train()
        self.model(tgt.image)
        for i, (m, (momentum, training)) in enumerate(zip(self._bns, saved)):
            getattr(self, f"target_mean_{i}").copy_(m.running_mean)
            getattr(self, f"target_var_{i}").copy_(m.running_var)
            m.running_mean.copy_((1 - a) * getattr(self, f"source_mean_{i}") + a * m.running_mean)
            m.running_var.copy_((1 - a) * getattr(self, f"source_var_{i}") + a * m.running_var)
            m.momentum = momentum
            m.train(training)
        self.target_batches += 1
        self.target_images += tgt.image.shape[0]
        return {"target_batches": float(k + 1), "alpha": a}
