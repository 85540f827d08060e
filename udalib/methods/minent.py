"""MinEnt -- Vu et al., "ADVENT: Adversarial Entropy Minimization for Domain Adaptation in Semantic
Segmentation", CVPR 2019, Eq. (3); as run by the MaxSquare code base (``--target_mode entropy``).

Taught in ``notebooks/03_entropy_minimization.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.batch import SourceBatch, TargetBatch
from ..losses import entropy_loss
from .base import MINICITY_ADAPT, Choice, Method, MethodConfig


class EntropyNormalization(Choice):
    """The constant the entropy is divided by (:func:`udalib.losses.entropy_loss`)."""

    ORIGINAL = "original"  # C, the number of classes: MaxSquare's softCrossEntropy (ZJULearning/MaxSquareLoss)
    LOG_C = "log_c"  # log C, ADVENT's (valeoai/ADVENT): the entropy in [0, 1]

    @classmethod
    def _missing_(cls, value):
        """``"seed"``, the spelling stored configs and run keys hold, names :attr:`ORIGINAL` too."""
        return cls.ORIGINAL if value == "seed" else None

    @property
    def key_value(self) -> str:
        return "seed" if self is EntropyNormalization.ORIGINAL else self.value  # the stored runs' spelling


@dataclass
class MinEntConfig(MethodConfig):
    TARGET_WEIGHTS = ("lambda_target",)
    # the target weights of the MiniCity presets are larger than the paper's because MiniDeepLab adapts in 60 steps
    # instead of ~90k (measured: notebook 04)
    PRESETS = {"minicity": MINICITY_ADAPT | {"lambda_target": 2.0}}

    lambda_target: float = 0.1  # λ_ent; --lambda_target (the README gives no MinEnt value: 0.1 as for MaxSquare)
    normalization: EntropyNormalization = EntropyNormalization.ORIGINAL  # "original" (entropy / C) or "log_c"


class MinEnt(Method):
    r""":math:`\mathcal{L}_{seg}(x_s, y_s) + \lambda_{target}\,\mathcal{L}_{ent}(x_t)`, one SGD step per batch pair."""

    def __init__(self, model, cfg: MinEntConfig | None = None):
        super().__init__(model, cfg or MinEntConfig())

    def step(self, src: SourceBatch, tgt: TargetBatch) -> dict[str, float]:
        c = self.cfg
        out_s = self.source_forward(src.image)  # source and target are separate forward passes, as in the original (BN)
        l_seg, logs = self.source_loss(out_s, src)
        out_t = self.model(tgt.image)
        l_ent = entropy_loss(out_t["out"], c.normalization)
        self.update(self.optimizers["model"], l_seg + c.lambda_target * l_ent)
        return logs | {"ent": l_ent.item()}
