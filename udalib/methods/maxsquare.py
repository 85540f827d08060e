"""MaxSquare -- Chen, Xue, Cai, "Domain Adaptation for Semantic Segmentation with Maximum Squares Loss",
ICCV 2019: maximum squares (Eq. 5), + image-wise class weights (IW, Eq. 7), + multi-level self-produced guidance.
The original's other target losses (``--target_mode entropy``, ``IW_entropy``, ``hard``) are options of the same config.

Taught in ``notebooks/04_maximum_squares.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.batch import SourceBatch, TargetBatch
from ..losses import (
    entropy_loss,
    hard_pseudo_label_loss,
    iw_entropy_loss,
    iw_maxsquare_loss,
    maxsquare_loss,
    seg_loss,
    self_produced_guidance,
)
from .base import MINICITY_ADAPT, Choice, Method, MethodConfig, keyed_off_default


class TargetLoss(Choice):
    """The original ``--target_mode`` (with ``iw_ratio``: its IW form)."""

    MAXSQUARE = "maxsquare"  # maximum squares (with iw_ratio: IW_maxsquare)
    ENTROPY = "entropy"  # entropy (with iw_ratio: IW_entropy)
    HARD = "hard"  # confident argmax pseudo-labels (no iw_ratio)


@dataclass
class MaxSquareConfig(MethodConfig):
    TARGET_WEIGHTS = ("lambda_target",)  # the guidance term is weighted by lambda_target too
    # inherited by the IW and IW+Multi configs and by SNR-MS (SNRMaxSquareConfig); λ_T larger than the paper's, as
    # MinEnt's (MiniDeepLab adapts in 60 steps)
    PRESETS = {"minicity": MINICITY_ADAPT | {"lambda_target": 5.0}}

    lambda_target: float = 0.1  # λ_T, weight of the target loss; --lambda_target
    iw_ratio: float | None = None  # α of the image-wise weights (Eq. 7); --IW_ratio; None = plain MaxSquare
    guidance: bool = False  # multi-level self-produced guidance on the auxiliary head; --multi True
    threshold: float = 0.95  # confidence threshold of the guidance and of target_loss "hard"; --threshold
    # The original's --target_mode: "maxsquare" (with iw_ratio: IW_maxsquare), "entropy" (with iw_ratio: IW_entropy)
    # or "hard" (confident argmax pseudo-labels, no iw_ratio). In the run key only off "maxsquare".
    target_loss: TargetLoss = keyed_off_default(TargetLoss.MAXSQUARE)


@dataclass
class MaxSquareIWConfig(MaxSquareConfig):
    iw_ratio: float | None = 0.2  # README: --target_mode IW_maxsquare --IW_ratio 0.2


@dataclass
class MaxSquareIWMultiConfig(MaxSquareIWConfig):
    lambda_target: float = 0.09  # README: --lambda_target 0.09 --multi True --lambda_seg 0.1 --threshold 0.95
    lambda_seg: float = 0.1
    guidance: bool = True


# target_loss -> (its loss without, with the image-wise weights), as the original's --target_mode
# (ZJULearning/MaxSquareLoss tools/solve_gta5.py, lines 113-122)
TARGET_LOSSES = {
    "maxsquare": (lambda x, c: maxsquare_loss(x), lambda x, c: iw_maxsquare_loss(x, c.iw_ratio)),
    "entropy": (lambda x, c: entropy_loss(x, "original"), lambda x, c: iw_entropy_loss(x, c.iw_ratio)),
    "hard": (lambda x, c: hard_pseudo_label_loss(x, c.threshold), None),
}


class MaxSquare(Method):
    r""":math:`\mathcal{L}_{seg}(x_s) + \lambda_T \mathcal{L}_{ms}(x_t)`, the IW and multi-level variants by config."""

    def __init__(self, model, cfg: MaxSquareConfig | None = None):
        cfg = cfg or MaxSquareConfig()
        if cfg.target_loss == "hard" and cfg.iw_ratio is not None:
            raise ValueError("target_loss 'hard' has no image-wise weights: set iw_ratio to None")
        super().__init__(model, cfg)

    def step(self, src: SourceBatch, tgt: TargetBatch) -> dict[str, float]:
        c = self.cfg
        # (1) source: supervised, main head (+ auxiliary head when multi-level)
        l_seg, logs = self.source_loss(self.source_forward(src.image), src)
        # (2) target: maximum squares (or entropy, or hard pseudo-labels) on the main head, image-wise weighted if
        # iw_ratio is set
        out_t = self.model(tgt.image)
        l_target = TARGET_LOSSES[c.target_loss][c.iw_ratio is not None](out_t["out"], c)
        loss = l_seg + c.lambda_target * l_target
        logs["target"] = l_target.item()
        # (3) multi-level guidance: the auxiliary head learns the confident pseudo-labels of both heads
        if c.guidance:
            pseudo = self_produced_guidance(out_t["out"], out_t["aux"], c.threshold)
            l_guide = seg_loss(out_t["aux"], pseudo)
            loss = loss + c.lambda_seg * c.lambda_target * l_guide
            logs["guidance"] = l_guide.item()
        self.update(self.optimizers["model"], loss)
        return logs
