r"""SNR -- Style Normalization and Restitution (Jin, Lan, Zeng, Chen, "Style Normalization and Restitution for
Domain Generalization and Adaptation", arXiv 2101.00588; ``microsoft/SNR/segmentation``).

After a residual stage with output :math:`F`, instance normalization removes the style (per-channel mean and
variance of each image), and a channel gate puts back the part of the removed residual that matters for the task:

.. math::
    \tilde F = \mathrm{IN}(F), \qquad R = F - \tilde F, \qquad
    a = \sigma\big(W_2\,\delta(W_1\,\mathrm{GAP}(R))\big) \in (0, 1)^{C}

.. math::
    R^+ = a \odot R, \quad R^- = (1 - a) \odot R, \qquad
    \tilde F^+ = \tilde F + R^+ \;(\text{passed on}), \quad \tilde F^- = \tilde F + R^- \;(\text{loss only})

so :math:`\tilde F^+ + \tilde F^- = \tilde F + F`: the enhanced and contaminated features split the residual
between them. With :math:`a = 1` the block is the identity (:math:`\tilde F^+ = F`); with :math:`a = 0` it is
plain instance normalization (:math:`\tilde F^+ = \tilde F`).

:func:`restitution` is that algebra as a pure function; :class:`SNRBlock` is the reusable module (IN + gate) that
:class:`MiniDeepLabSNR` inserts after its stages 1-3. :class:`DeepLabV2SNR` is the reference's
``ResNetMulti_SNR``: the same blocks after ``layer1``-``layer3``, under the reference's attribute names
(``IN1``..``IN3``, ``style_reid_laye1``..``3``, the spelling is theirs) so that its checkpoints load.

Both models return, besides ``out``/``aux``/``feat``, ``snr``: one :class:`SNRFeatures` per block, which the
dual causality loss (:func:`udalib.losses.dual_causality_loss`) reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .deeplabv2 import DeepLabV2, param_groups, upsample_to
from .tiny import MiniDeepLab

GATE_REDUCTION = 16  # reference: ChannelGate_sub(..., reduction=16)
SNR_KEY_PREFIXES = ("IN1.", "IN2.", "IN3.", "style_reid_laye")  # DeepLabV2SNR's keys beyond DeepLab-v2 multi


@dataclass
class SNRFeatures:
    """What one SNR block computed, all ``(N, C, H, W)`` except ``gate`` ``(N, C, 1, 1)``."""

    normalized: Tensor  # F~ = IN(F)
    enhanced: Tensor  # F~+ = F~ + a * R  (passed to the next stage)
    contaminated: Tensor  # F~- = F~ + (1 - a) * R
    gate: Tensor  # a


class ChannelGate(nn.Module):
    """SE-style gate: global average pool, 1x1 conv C -> C/16, ReLU, 1x1 conv C/16 -> C, sigmoid.

    Keys ``fc1.{weight,bias}``, ``fc2.{weight,bias}`` as the reference's ``ChannelGate_sub``.

    Shape:
        ``(N, C, H, W)`` -> ``(N, C, 1, 1)``, values in ``(0, 1)``.
    """

    def __init__(self, channels: int, reduction: int = GATE_REDUCTION):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        for conv in (self.fc1, self.fc2):  # the reference's init loop: N(0, 0.01) weights, default biases
            nn.init.normal_(conv.weight, 0.0, 0.01)

    def forward(self, residual: Tensor) -> Tensor:
        pooled = F.adaptive_avg_pool2d(residual, 1)
        return self.fc2(F.relu(self.fc1(pooled))).sigmoid()


def restitution(x: Tensor, instance_norm: nn.Module, gate: nn.Module) -> SNRFeatures:
    r"""Style normalization and restitution of one stage's output ``x`` (equations in the module docstring)."""
    normalized = instance_norm(x)
    residual = x - normalized
    a = gate(residual)
    return SNRFeatures(normalized=normalized, enhanced=normalized + a * residual,
                       contaminated=normalized + (1 - a) * residual, gate=a)


class SNRBlock(nn.Module):
    """The reusable SNR module: ``InstanceNorm2d(C, affine=True)`` (per-image statistics at train and eval time,
    no running statistics) and a :class:`ChannelGate`. Returns :class:`SNRFeatures`; pass ``.enhanced`` on."""

    def __init__(self, channels: int, reduction: int = GATE_REDUCTION):
        super().__init__()
        self.IN = nn.InstanceNorm2d(channels, affine=True)
        self.gate = ChannelGate(channels, reduction)

    def forward(self, x: Tensor) -> SNRFeatures:
        return restitution(x, self.IN, self.gate)


class MiniDeepLabSNR(MiniDeepLab):
    """:class:`~udalib.models.tiny.MiniDeepLab` with an :class:`SNRBlock` after stages 1, 2 and 3, as the
    reference places them in DeepLab-v2 (not after the last stage). Gates use reduction 4 (16 channels / 16 would
    leave one hidden unit). ``train_snr=False`` leaves the SNR parameters out of the optimizer, as the reference."""

    def __init__(self, num_classes: int = 19, width: int = 16, multi_level: bool = True, reduction: int = 4,
                 train_snr: bool = True):
        super().__init__(num_classes, width, multi_level)
        w = width
        self.train_snr = train_snr
        self.snr_channels = (2 * w, 2 * w, 3 * w)
        self.optional_init_prefixes = ("snr1.", "snr2.", "snr3.")  # a plain MiniDeepLab checkpoint may start it
        self.snr1, self.snr2, self.snr3 = SNRBlock(2 * w, reduction), SNRBlock(2 * w, reduction), \
            SNRBlock(3 * w, reduction)

    def forward(self, x: Tensor) -> dict:
        size = x.shape[-2:]
        s1 = self.snr1(self.layer1(self.stem(x)))
        s2 = self.snr2(self.layer2(s1.enhanced))
        s3 = self.snr3(self.layer3(s2.enhanced))
        f4 = self.layer4(s3.enhanced)
        up = lambda logits: F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
        out = {"out": up(self.head(f4)), "feat": f4, "snr": [s1, s2, s3]}
        if self.aux_head is not None:
            out["aux"] = up(self.aux_head(s3.enhanced))
        return out

    def snr_modules(self) -> list[nn.Module]:
        return [self.snr1, self.snr2, self.snr3]

    def optim_groups(self, lr: float) -> list[dict]:
        skip = set() if self.train_snr else {id(p) for m in self.snr_modules() for p in m.parameters()}
        return [{"params": [p for p in self.parameters() if p.requires_grad and id(p) not in skip], "lr": lr,
                 "lr_mult": 1.0}]


class DeepLabV2SNR(DeepLabV2):
    """``deeplabv2_multi_snr``: DeepLab-v2 ResNet-101 multi-level with SNR after ``layer1``-``layer3``.

    State-dict keys, order and shapes equal the reference's ``ResNetMulti_SNR`` (the DeepLab-v2 multi keys, then
    ``IN1``-``IN3``, then ``style_reid_laye1``-``3``).

    **Corrected from the reference (``microsoft/SNR`` ``segmentation/``).** The reference's ``optim_parameters``
    leaves the IN
    and gate parameters out of every optimizer group, so they never train (gates stay near 0.5, IN at
    gamma 1, beta 0). Here :meth:`optim_groups` puts them in the backbone (1x) group; ``train_snr=False``
    reproduces the reference. A checkpoint without SNR keys (``GTA5_source.pth``) loads with
    :func:`udalib.models.checkpoint.load_into` and ``skip_prefixes=SNR_KEY_PREFIXES`` (``Experiment.init`` does
    this through ``optional_init_prefixes``): the SNR blocks keep their initialisation and every other key is
    still checked strictly (the reference's strict load raises).
    """

    def __init__(self, num_classes: int, legacy_aspp: bool = True, freeze_bn_affine: bool = False,
                 blocks=(3, 4, 23, 3), train_snr: bool = True):
        super().__init__(num_classes, multi_level=True, legacy_aspp=legacy_aspp, freeze_bn_affine=freeze_bn_affine,
                         blocks=blocks)
        self.train_snr = train_snr
        self.snr_channels = (256, 512, 1024)
        self.optional_init_prefixes = SNR_KEY_PREFIXES  # GTA5_source.pth (no SNR keys) starts SNR-MS
        self.IN1, self.IN2, self.IN3 = (nn.InstanceNorm2d(c, affine=True) for c in (256, 512, 1024))
        self.style_reid_laye1, self.style_reid_laye2, self.style_reid_laye3 = (ChannelGate(c) for c in
                                                                               (256, 512, 1024))

    def forward(self, x: Tensor) -> dict:
        size = x.shape[-2:]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        s1 = restitution(self.layer1(x), self.IN1, self.style_reid_laye1)
        s2 = restitution(self.layer2(s1.enhanced), self.IN2, self.style_reid_laye2)
        s3 = restitution(self.layer3(s2.enhanced), self.IN3, self.style_reid_laye3)
        x4 = self.layer4(s3.enhanced)
        return {"out": upsample_to(self.layer6(x4), size), "aux": upsample_to(self.layer5(s3.enhanced), size),
                "feat": x4, "snr": [s1, s2, s3]}

    def snr_modules(self) -> list[nn.Module]:
        return [self.IN1, self.IN2, self.IN3, self.style_reid_laye1, self.style_reid_laye2, self.style_reid_laye3]

    def optim_groups(self, lr: float, legacy_param_multiplicity: bool = False) -> list[dict]:
        groups = super().optim_groups(lr, legacy_param_multiplicity)
        if self.train_snr:
            extra = param_groups(self.snr_modules(), [], lr)[0]["params"]
            groups[0]["params"] = groups[0]["params"] + extra
            if "multiplicity" in groups[0]:  # not in the reference's groups: udalib lists them once
                groups[0]["multiplicity"] = groups[0]["multiplicity"] + [1] * len(extra)
        return groups

