"""AdaptSegNet -- Tsai et al., "Learning to Adapt Structured Output Space for Semantic Segmentation", CVPR 2018:
adversarial alignment of the softmax outputs, single-level (Sec. 3.2) and multi-level (Sec. 3.3, Eq. 5).

Taught in ``notebooks/05_adversarial_output_space.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.batch import SourceBatch, TargetBatch
from ..losses import adversarial_loss, discriminator_loss
from ..models.discriminator import FCDiscriminator
from .base import MINICITY_ADAPT, Choice, Method, MethodConfig, set_requires_grad


class GAN(Choice):
    """The GAN objective of segmenter and discriminators (:func:`udalib.losses.gan_loss`); the original ``--gan``."""

    VANILLA = "vanilla"  # BCE with logits (--gan Vanilla)
    LS = "ls"  # least squares (--gan LS)


@dataclass
class AdaptSegNetConfig(MethodConfig):
    TARGET_WEIGHTS = ("lambda_adv_target1", "lambda_adv_target2")  # the discriminators still train
    # MiniCity: 100x the paper's λ_adv (aux:main 1:5 as in the paper) and 30x its D lr, so that D learns and pushes
    # back within notebook 05's 60 steps; a 16-wide D (the paper's 64 triples the step time on 2 cores)
    PRESETS = {"minicity": MINICITY_ADAPT | {"lambda_adv_target2": 0.1, "lr_d": 3e-3, "ndf": 16}}

    lr_d: float = 1e-4  # discriminators' Adam, same poly decay as the segmenter; --learning-rate-D
    betas: tuple[float, float] = (0.9, 0.99)  # Adam betas of the original
    lambda_adv_target1: float = 0.0  # λ_adv of the auxiliary output (D1); --lambda-adv-target1
    lambda_adv_target2: float = 1e-3  # λ_adv of the main output (D2); --lambda-adv-target2 (README LS-GAN: 0.01)
    gan: GAN = GAN.VANILLA  # "vanilla" (BCE) or "ls" (least squares); --gan Vanilla | LS
    levels: tuple[str, ...] = ("out",)  # outputs that get a discriminator (see AdaptSegNet)
    ndf: int = 64  # discriminator width (channels of its first conv)


@dataclass
class AdaptSegNetMultiConfig(AdaptSegNetConfig):
    PRESETS = {"minicity": AdaptSegNetConfig.PRESETS["minicity"] | {"lambda_adv_target1": 0.02}}

    lambda_seg: float = 0.1  # README multi-level: --lambda-seg 0.1
    lambda_adv_target1: float = 2e-4  # --lambda-adv-target1 0.0002
    levels: tuple[str, ...] = ("aux", "out")


class AdaptSegNet(Method):
    r""":math:`\mathcal{L}_{seg}(x_s) + \sum_i \lambda^i_{adv} \mathcal{L}^i_{adv}(x_t)` against a discriminator
    :math:`D_i` per output level, which itself minimises :math:`\mathcal{L}_d` (Eq. 2).

    ``levels`` names the outputs that have a discriminator (a submodule, so it is checkpointed with the method).
    The original always trains D1 and D2 and gives D1 weight 0 in single-level runs; D1 then never reaches the
    segmenter, so ``adaptsegnet`` does not build it (``levels=("aux", "out")`` trains it, as the original does). With
    the λ_adv at 0 the same discriminators are trained and the segmenter gets source-only updates: the control.
    """

    LAMBDA_ADV = {"aux": "lambda_adv_target1", "out": "lambda_adv_target2"}

    def __init__(self, model, cfg: AdaptSegNetConfig | None = None):
        super().__init__(model, cfg or AdaptSegNetConfig())
        c = self.cfg
        if not set(c.levels) <= set(self.LAMBDA_ADV):
            raise ValueError(f"levels must be among {tuple(self.LAMBDA_ADV)}, got levels={tuple(c.levels)}")
        if c.lambda_adv_target1 and "aux" not in c.levels:
            raise ValueError("lambda_adv_target1 > 0 needs levels=('aux', 'out') (a discriminator on 'aux')")
        if ("aux" in c.levels or c.lambda_seg) and not getattr(model, "multi_level", False):
            raise ValueError("this model has no auxiliary output: use a multi-level model or the single-level config")
        self.lambda_adv = {k: getattr(c, self.LAMBDA_ADV[k]) for k in c.levels}
        self.discriminators = nn.ModuleDict({k: FCDiscriminator(model.num_classes, c.ndf) for k in c.levels})
        self.optimizers["disc"] = torch.optim.Adam(self.discriminators.parameters(), lr=c.lr_d, betas=c.betas)

    def step(self, src: SourceBatch, tgt: TargetBatch) -> dict[str, float]:
        out_s, out_t, logs = self.update_segmenter(src, tgt)
        return logs | self.update_discriminators(out_s, out_t)

    def update_segmenter(self, src: SourceBatch, tgt: TargetBatch) -> tuple[dict, dict, dict[str, float]]:
        """(1) Segment the source; fool the frozen discriminators with the target softmax maps."""
        c, disc = self.cfg, self.discriminators
        set_requires_grad(disc, False)
        out_s = self.source_forward(src.image)
        l_seg, logs = self.source_loss(out_s, src)
        out_t = self.model(tgt.image)
        l_adv = {k: adversarial_loss(disc[k](out_t[k].softmax(dim=1)), c.gan) for k in c.levels}
        self.update(self.optimizers["model"], l_seg + sum(self.lambda_adv[k] * l_adv[k] for k in c.levels))
        logs |= {f"adv_{k}": v.item() for k, v in l_adv.items()}
        return out_s, out_t, logs

    def update_discriminators(self, out_s: dict, out_t: dict) -> dict[str, float]:
        """(2) Train each discriminator on the detached maps: source -> SOURCE, target -> TARGET."""
        disc = self.discriminators
        set_requires_grad(disc, True)
        l_d = {k: discriminator_loss(disc[k](out_s[k].detach().softmax(dim=1)),
                                     disc[k](out_t[k].detach().softmax(dim=1)), self.cfg.gan) for k in disc}
        self.update(self.optimizers["disc"], sum(l_d.values()))
        return {f"d_{k}": v.item() for k, v in l_d.items()}
