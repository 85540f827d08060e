"""SNR -- Jin et al., "Style Normalization and Restitution for Domain Generalization and Adaptation" (arXiv
2101.00588): a backbone with SNR blocks (:mod:`udalib.models.snr`), trained on source alone (``snr``: domain
generalization, no target image at all) or with MaxSquare on target (``snr_maxsquare``: the original's "SNR-MS").

Two modes, because the released segmentation code does not do what the paper says (``microsoft/SNR`` ``segmentation/``):

* ``mode="paper"`` (default): the SNR blocks are optimised (backbone group, 1x lr) and the dual causality loss
  (:func:`udalib.losses.dual_causality_loss`) is added on source images, one term per block. The segmentation
  version of that loss is **our design** (the original never calls its own): a 1x1-conv pixel classifier per block,
  trained by cross-entropy on the *detached* enhanced features with source labels at the feature grid, so that
  it measures the features without shaping them; the causality term reaches the backbone and the SNR blocks
  only, through a frozen copy of those classifiers.
* ``mode="reference"``: as the released code: SNR blocks in no optimizer group (they keep their
  initialisation), no causality loss.

Taught in ``notebooks/06_style_normalization_restitution.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import SourceBatch
from ..losses import dual_causality_loss, seg_loss
from ..losses.clustering import labels_at_feature_grid
from .base import Choice
from .maxsquare import MaxSquare, MaxSquareConfig
from .source_only import SourceOnly, SourceOnlyConfig


class SNRMode(Choice):
    """What the SNR blocks do in training (see the module docstring)."""

    PAPER = "paper"  # the blocks train, with the dual causality loss
    REFERENCE = "reference"  # as the released code: the blocks keep their initialisation, no causality loss


MODES = tuple(SNRMode)


@dataclass
class SNRConfig(SourceOnlyConfig):
    lambda_causality: float = 0.01  # weight of the causality terms (classification code: 0.01); paper mode only
    mode: SNRMode = SNRMode.PAPER  # "paper" | "reference" (see the module docstring)


@dataclass
class SNRMaxSquareConfig(MaxSquareConfig):
    # README: solve_gta5.py --backbone deeplabv2_multi_snr --target_mode maxsquare --lambda_target 0.1
    lambda_causality: float = 0.01
    mode: SNRMode = SNRMode.PAPER


class CausalityHeads(nn.Module):
    """One 1x1-conv pixel classifier per SNR block, and the loss that uses them (paper mode)."""

    def __init__(self, channels: tuple[int, ...], num_classes: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in channels)

    def forward(self, snr_features: list, label: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (sum of the blocks' causality losses, sum of the classifiers' cross-entropies)."""
        l_caus = l_cls = 0.0
        for feats, head in zip(snr_features, self.heads, strict=True):
            grid = feats.enhanced.shape[-2:]
            small = labels_at_feature_grid(label, grid).view(label.shape[0], *grid)
            l_cls = l_cls + seg_loss(head(feats.enhanced.detach()), small)
            # the three feature maps through a frozen copy of the classifier, in one call
            three = torch.cat([feats.normalized, feats.enhanced, feats.contaminated])
            logits = F.conv2d(three, head.weight.detach(), head.bias.detach()).chunk(3)
            l_caus = l_caus + dual_causality_loss(*logits)
        return l_caus, l_cls


def _prepare_model(model: nn.Module, cfg) -> None:
    """Check that the model has SNR blocks, and choose whether they are trained (before the optimizer is built)."""
    if not hasattr(model, "snr_modules"):
        raise ValueError("the SNR methods need a model with SNR blocks: build 'minideeplab_snr' or "
                         "'deeplabv2_multi_snr' (Experiment(model=...), --model)")
    model.train_snr = cfg.mode == "paper"  # reference: the SNR blocks stay out of the optimizer


def _causality_heads(model: nn.Module, cfg, optimizer) -> CausalityHeads | None:
    """Paper mode: the per-block classifiers, added to the optimizer at the model's head lr (10x for DeepLab)."""
    if cfg.mode != "paper" or not cfg.lambda_causality:
        return None
    heads = CausalityHeads(model.snr_channels, model.num_classes)
    mult = max(group.get("lr_mult", 1.0) for group in optimizer.param_groups)
    optimizer.add_param_group({"params": list(heads.parameters()), "lr": mult * cfg.lr, "lr_mult": mult})
    return heads


def _source_loss_with_causality(method, base_loss, out: dict, src: SourceBatch):
    loss, logs = base_loss
    if method.causality is not None:
        l_caus, l_cls = method.causality(out["snr"], src.label)
        loss = loss + method.cfg.lambda_causality * (l_caus + l_cls)
        logs |= {"causality": l_caus.item(), "stage_ce": l_cls.item()}
    return loss, logs


class SNR(SourceOnly):
    r"""Source-only training of an SNR model: :math:`\mathcal{L}_{seg} + \lambda_{caus}\sum_k(\mathcal{L}_{caus,k}
    + \mathcal{L}_{CE}(\phi_k))` (paper mode)."""

    uses_target = False

    def __init__(self, model, cfg: SNRConfig | None = None):
        super().__init__(model, cfg or SNRConfig())
        self.causality = _causality_heads(model, self.cfg, self.optimizers["model"])

    def configure_model(self, model: nn.Module) -> None:
        _prepare_model(model, self.cfg)

    def source_loss(self, out: dict, src: SourceBatch, main_loss=seg_loss):
        return _source_loss_with_causality(self, super().source_loss(out, src, main_loss), out, src)


class SNRMaxSquare(MaxSquare):
    r"""SNR-MS: MaxSquare (:class:`~udalib.methods.maxsquare.MaxSquare`) on an SNR model; in paper mode the
    causality terms are added on the source batch."""

    def __init__(self, model, cfg: SNRMaxSquareConfig | None = None):
        super().__init__(model, cfg or SNRMaxSquareConfig())
        self.causality = _causality_heads(model, self.cfg, self.optimizers["model"])

    def configure_model(self, model: nn.Module) -> None:
        _prepare_model(model, self.cfg)

    def source_loss(self, out: dict, src: SourceBatch, main_loss=seg_loss):
        return _source_loss_with_causality(self, super().source_loss(out, src, main_loss), out, src)
