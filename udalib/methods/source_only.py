"""Source-only training: the baseline every adaptation method starts from and is compared with.

Taught in ``notebooks/01_source_pretraining.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.batch import SourceBatch, TargetBatch
from .base import Method, MethodConfig


@dataclass
class SourceOnlyConfig(MethodConfig):
    PRESETS = {"minicity": {"lr": 0.05}}  # MiniDeepLab from scratch (SNRConfig inherits it)

    lambda_seg: float = 0.1  # weight of the auxiliary head's CE (MaxSquare --multi True); 0 = main head only


class SourceOnly(Method):
    r"""Minimise :math:`\mathcal{L}_{seg}(out) + \lambda_{seg} \mathcal{L}_{seg}(aux)` on labelled source images."""

    uses_target = False

    def __init__(self, model, cfg: SourceOnlyConfig | None = None):
        super().__init__(model, cfg or SourceOnlyConfig())

    def step(self, src: SourceBatch, tgt: TargetBatch | None = None) -> dict[str, float]:
        loss, logs = self.source_loss(self.model(src.image), src)
        self.update(self.optimizers["model"], loss)
        return logs
