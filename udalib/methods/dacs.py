"""DACS -- Tranheden, Olsson, Pinto, Svensson, "DACS: Domain Adaptation via Cross-domain Mixed Sampling", WACV
2021: a mean teacher labels the target images, half of the classes of a source image are pasted onto them
(ClassMix), and the segmenter learns the source labels plus the mixed images with their mixed labels.
As ``vikolss/DACS`` ``trainUDA.py`` runs it (lines 378-511), with the defaults of ``configs/configUDA.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.augment import strong_augment
from ..data.batch import SourceBatch, TargetBatch
from ..losses.dacs import class_mix_classes, class_mix_mask, mix, pixel_weighted_ce, teacher_pseudo_labels
from .base import MINICITY_ADAPT, Method, MethodConfig, keyed_off_default
from .mean_teacher import MeanTeacher


@dataclass
class DACSConfig(MethodConfig):
    TARGET_WEIGHTS = ("lambda_target",)
    PRESETS = {"minicity": dict(MINICITY_ADAPT)}

    # lr 2.5e-4, momentum 0.9, weight_decay 5e-4: configUDA.json "training" (the OptimConfig defaults); the original
    # DeepLab-v2 is single-level (lambda_seg 0)
    lambda_target: float = 1.0  # λ of the mixed-image loss; "unlabeled": "consistency_weight": 1
    alpha: float = 0.99  # the mean teacher's EMA decay; alpha_teacher = 0.99 (trainUDA.py:510, not in the config)
    threshold: float = 0.968  # confidence of a pseudo-label that counts; "pixel_weight": "threshold_uniform"
    #                            (0.968 at trainUDA.py:467)
    color_jitter: bool = True  # "unlabeled": "color_jitter": true (strength 0.25, probability 0.8)
    blur: bool = True  # "unlabeled": "blur": true (Gaussian, sigma in [0.15, 1.15], probability 0.5)
    # the original counts the ignore label 255 among a source label's classes (trainUDA.py:426-427): when drawn, the
    # source's unlabelled pixels are pasted too (label 255, no loss). False: only real classes are mixed
    mix_ignore: bool = True
    # False: the "no mixing" ablation -- the teacher's pseudo-labels on the plain target image, strongly augmented
    # the same way, with the confidence weight w_t on every pixel (no ClassMix): the mean teacher alone
    mix: bool = keyed_off_default(True)  # off its default only: the stored runs keep their names


class DACS(Method):
    r""":math:`\mathcal{L}_{seg}(x_s, y_s) + \lambda\,\mathcal{L}_{mix}(x_m, y_m, w_m)`, one SGD step per batch pair,
    then one update of the mean teacher (:class:`MeanTeacher`: EMA of the parameters, train-mode BatchNorm).

    Per image ``i`` of the batch: the classes :func:`~udalib.losses.dacs.class_mix_classes` draws from source label
    ``i`` give the mask :math:`M`; :math:`x_m = M x_s + (1 - M) x_t`, then colour jitter and blur
    (:func:`~udalib.data.augment.strong_augment`); :math:`y_m = M y_s + (1 - M) \hat y_t` with :math:`\hat y_t` the
    teacher's argmax on the plain target image; :math:`w_m = M + (1 - M) w_t` with :math:`w_t` the batch's share of
    confident teacher pixels (:func:`~udalib.losses.dacs.confidence_weight`).

    ``mix=False`` (the "no mixing" ablation, not in the original): :math:`M = 0`, so :math:`x_m` is the strongly
    augmented target image, :math:`y_m = \hat y_t` and :math:`w_m = w_t` on every pixel -- self-training with the
    mean teacher's labels, without ClassMix.

    Departure, stated: the original mixes exactly two pairs (``MixMask0``, ``MixMask1``: batch 2 hard-coded; a
    larger batch trains on the first two mixed images only, a batch of 1 fails), and divides the count of confident
    pixels of the whole target batch by the pixels of those two images. Here every source image ``i`` is pasted on
    target image ``i`` and the share is over the whole target batch: the same at batch 2.

    BatchNorm: source and mixed images are separate forward passes, as in the original. Under the run's
    ``bn_stats="both"`` (the original) both move the running statistics; under ``"target"`` (MiniCity rows) the
    source pass leaves them alone and the mixed pass moves them, so the evaluated model ends with statistics of
    mixed images (target background with pasted source classes), not of plain target images. The teacher
    normalises each target batch with its own statistics.

    The jitter un-normalises the images: ``normalization`` (set from the model by ``Experiment.build_method``).
    """

    normalization: str = "imagenet"  # how the images are normalised (udalib.data.normalize)

    def __init__(self, model, cfg: DACSConfig | None = None):
        super().__init__(model, cfg or DACSConfig())
        self.teacher = MeanTeacher(model, self.cfg.alpha)

    def step(self, src: SourceBatch, tgt: TargetBatch) -> dict[str, float]:
        c = self.cfg
        if src.image.shape != tgt.image.shape:
            raise ValueError(f"DACS pastes source image i onto target image i: batches of the same shape needed, got "
                             f"{tuple(src.image.shape)} and {tuple(tgt.image.shape)}")
        # (1) source: supervised
        l_seg, logs = self.source_loss(self.source_forward(src.image), src)
        # (2) the teacher's pseudo-labels on the plain target images, and the share of confident ones
        pseudo, w_t = self.pseudo_labels(tgt.image)
        # (3) ClassMix: half the classes of each source label pasted onto its target image
        if c.mix:
            mask = torch.stack([class_mix_mask(y, class_mix_classes(y, c.mix_ignore)) for y in src.label])
        else:  # the "no mixing" ablation: nothing pasted, the plain target image
            mask = torch.zeros_like(src.label, dtype=torch.bool)
        image = strong_augment(mix(mask, src.image, tgt.image), self.normalization, c.color_jitter, c.blur)
        label = mix(mask, src.label, pseudo)
        weight = mix(mask, torch.ones_like(pseudo, dtype=w_t.dtype), w_t.expand_as(pseudo))
        l_mix = pixel_weighted_ce(self.model(image)["out"], label, weight)
        self.update(self.optimizers["model"], l_seg + c.lambda_target * l_mix)
        # (4) the teacher follows the updated segmenter
        self.teacher.update(self.model)
        return logs | {"mix": l_mix.item(), "pseudo_weight": w_t.item()}

    def pseudo_labels(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The teacher's argmax :math:`\hat y_t` on the target images ``(N, H, W)`` and :math:`w_t`, the batch's share
        of pixels whose top probability reaches the threshold (a scalar)."""
        return teacher_pseudo_labels(self.teacher(image)["out"], self.cfg.threshold)
