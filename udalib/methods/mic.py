"""MIC -- Hoyer, Dai, Wang, Van Gool, "MIC: Masked Image Consistency for Context-Enhanced Domain Adaptation", CVPR
2023: a host UDA method plus one term, the segmenter's prediction on a block-masked target image against the
teacher's pseudo-labels of the whole image. As ``lhoyer/MIC`` adds it to MinEnt, AdvSeg and DACS
(``seg/mmseg/models/uda/minent.py``:129-178, ``advseg.py``, ``dacs.py``:316-436, the module
``masking_consistency_module.py``), with the settings of its DeepLab-v2 experiments (``seg/experiments.py``:412-446,
id 81): ``mask_mode="separatetrgaug"``, ratio 0.7, blocks of 32 pixels on 512 x 512 crops of the half-resolution
images (GTA5 at 1280 x 720, Cityscapes at 1024 x 512). MiniCity's 64 x 128 images show that scene at 1/8 of the
half resolution: blocks of 32 / 8 = 4 pixels (the ``minicity`` presets).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..data.augment import strong_augment
from ..losses.mic import block_mask, mask_image, masked_consistency_loss, teacher_pseudo_labels
from .adaptsegnet import AdaptSegNet, AdaptSegNetMultiConfig
from .dacs import DACS, DACSConfig
from .mean_teacher import MeanTeacher
from .minent import MinEnt, MinEntConfig

MIC_JITTER_STRENGTH = 0.2  # color_jitter_strength=0.2 (configs/_base_/uda/{dacs,minent,advseg}.py); probability 0.8
MINICITY_MIC = {"mask_block": 4}


@dataclass
class MICFields:
    """What MIC adds to its host's config (``uda`` of ``lhoyer/MIC``'s configs)."""

    lambda_mic: float = 1.0  # λ of the masked term; mask_lambda=1
    mask_ratio: float = 0.7  # r, the share of masked blocks; mask_ratio=0.7 (0: the "w/o masking" ablation)
    mask_block: int = 32  # b, the block side in pixels; mask_block_size=32 at DeepLab-v2's half resolution
    # colour jitter (s 0.2, p 0.8) and blur (p 0.5) of the target image before the mask, mask_mode="separatetrgaug";
    # False: "separatetrg", Table 7's "w/o color augmentation"
    mic_augment: bool = True


@dataclass
class OwnTeacherFields(MICFields):
    """A host without a teacher gets MIC's own (``MaskingConsistencyModule(require_teacher=True)``)."""

    mic_alpha: float = 0.999  # its EMA decay; alpha=0.999 (configs/_base_/uda/minent.py, advseg.py)
    mic_threshold: float = 0.968  # τ of the pseudo-label weight; pseudo_threshold=0.968


class MIC:
    r"""Mixin placed before its host (``class MinEntMIC(MIC, MinEnt)``): the host's step, whose segmenter update
    minimises the host's loss :math:`+\ \lambda_{mic}\,\mathcal{L}^M` (:func:`masked_consistency_loss`) in one
    optimiser step, as the original's ``backward`` calls accumulate before one ``optimizer.step``. ``update`` is
    where every host hands its segmenter loss to the optimiser, so the term is added there, after the host's
    forward passes (the original's order): the teacher's pseudo-labels and weight :math:`q_T` on the full target
    image; that image jittered and blurred (``mic_augment``), then masked (:func:`block_mask`); the student on it.

    BatchNorm: the student's pass on the masked images moves the running statistics like any target pass (under
    ``bn_stats="target"`` too); the teacher normalises each target batch with its own statistics (train mode,
    :class:`MeanTeacher`), as DACS's teacher.
    """

    normalization: str = "imagenet"  # how the images are normalised (set by Experiment.build_method)
    _mic_target: Tensor | None = None

    def step(self, src, tgt):
        self._mic_target, self._mic_logs = tgt.image, {}
        logs = super().step(src, tgt)
        if self._mic_target is not None:
            raise RuntimeError(f"{type(self).__name__}: the host step never updated the segmenter")
        return logs | self._mic_logs

    def update(self, optimizer, loss):
        if optimizer is self.optimizers["model"] and self._mic_target is not None:
            l_mic, self._mic_logs = self.mic_loss(self._mic_target)
            loss, self._mic_target = loss + self.cfg.lambda_mic * l_mic, None
        super().update(optimizer, loss)

    def mic_loss(self, image: Tensor) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        pseudo, q_t = self.mic_pseudo_labels(image)
        if c.mic_augment:
            image = strong_augment(image, self.normalization, strength=MIC_JITTER_STRENGTH)
        masked = mask_image(image, block_mask(image.shape, c.mask_ratio, c.mask_block))
        l_mic = masked_consistency_loss(self.model(masked)["out"], pseudo, q_t)
        return l_mic, {"mic": l_mic.item(), "mic_weight": q_t.item()}

    def mic_pseudo_labels(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """The teacher's pseudo-labels of the full target image and their weight :math:`q_T`."""
        return teacher_pseudo_labels(self.mic_teacher(image)["out"], self.mic_threshold)


class OwnTeacher(MIC):
    """MIC with its own EMA teacher, updated at the start of every step (``update_weights`` before the forward)."""

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.mic_teacher = MeanTeacher(model, cfg.mic_alpha)

    @property
    def mic_threshold(self) -> float:
        return self.cfg.mic_threshold

    def step(self, src, tgt):
        self.mic_teacher.update(self.model)
        return super().step(src, tgt)


@dataclass
class MinEntMICConfig(MinEntConfig, OwnTeacherFields):
    TARGET_WEIGHTS = (*MinEntConfig.TARGET_WEIGHTS, "lambda_mic")
    PRESETS = {"minicity": MinEntConfig.PRESETS["minicity"] | MINICITY_MIC}


@dataclass
class AdaptSegNetMultiMICConfig(AdaptSegNetMultiConfig, OwnTeacherFields):
    TARGET_WEIGHTS = (*AdaptSegNetMultiConfig.TARGET_WEIGHTS, "lambda_mic")
    PRESETS = {"minicity": AdaptSegNetMultiConfig.PRESETS["minicity"] | MINICITY_MIC}


@dataclass
class DACSMICConfig(DACSConfig, MICFields):
    TARGET_WEIGHTS = (*DACSConfig.TARGET_WEIGHTS, "lambda_mic")
    PRESETS = {"minicity": DACSConfig.PRESETS["minicity"] | MINICITY_MIC}


class MinEntMIC(OwnTeacher, MinEnt):
    """MinEnt + MIC."""


class AdaptSegNetMIC(OwnTeacher, AdaptSegNet):
    """AdaptSegNet + MIC (the discriminators' update is the host's)."""


class DACSMIC(MIC, DACS):
    """DACS + MIC on DACS's teacher and threshold (``mask_alpha="same"``, ``mask_pseudo_threshold="same"``). The
    teacher labels the target batch once: MIC takes the pseudo-labels and weight DACS's step drew from it this step
    (in the original's ``dacs.py`` the ``self.mic(...)`` call of "Masked Training" receives DACS's
    ``pseudo_label, pseudo_weight``). Its EMA
    update stays DACS's, after the step."""

    _labelled: tuple[Tensor, Tensor] | None = None

    def pseudo_labels(self, image: Tensor) -> tuple[Tensor, Tensor]:
        self._labelled = super().pseudo_labels(image)
        return self._labelled

    def mic_pseudo_labels(self, image: Tensor) -> tuple[Tensor, Tensor]:
        labelled, self._labelled = self._labelled, None
        if labelled is None:
            raise RuntimeError("DACS + MIC: DACS's step drew no pseudo-labels before MIC's term")
        return labelled

    @property
    def mic_teacher(self) -> MeanTeacher:
        return self.teacher
