"""DeepLab-v2 with a dilated, Caffe-style ResNet-101 backbone (the "Pytorch-Deeplab" model).

This is the segmentation network shared by AdaptSegNet, MaxSquare, SNR and UDAclustering. The
state_dict keys, shapes and ``requires_grad`` flags equal those of the reference implementations
(checked against ``tests/reference/keys_*.txt``), so released checkpoints load with a strict check.

Architecture, in brief:

* stem: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool with ``ceil_mode=True`` (so H=512 gives 129, not 128);
* four stages of bottlenecks (3, 4, 23, 3 blocks); the stride sits in the first 1x1 conv of a block
  (Caffe style, not the 3x3 as in torchvision); ``layer3`` and ``layer4`` keep stride 1 and dilate
  by 2 and 4, so the output stride is 8;
* ASPP heads (:class:`ClassifierModule`): ``layer5`` on ``layer3`` (auxiliary) and ``layer6`` on
  ``layer4`` (main) in the multi-level model; ``layer5`` on ``layer4`` in the single-level model.

Two reference bugs are reproduced knowingly or fixed, each behind a flag (the ``Pytorch-Deeplab`` model file that
``wasidennis/AdaptSegNet`` ``model/deeplab_multi.py`` and its copies share):

* ``legacy_aspp=True`` keeps the ASPP early-return bug (only rates 6 and 12 are summed), because
  every released checkpoint was trained that way;
* :meth:`DeepLabV2.optim_groups` lists every parameter once, whereas the reference lists backbone
  tensors 3-4 times; ``legacy_param_multiplicity=True`` records each tensor's number of listings, with which
  :class:`udalib.methods.base.ListingSGD` takes exactly the reference's step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

BLOCKS_RESNET101 = (3, 4, 23, 3)
ASPP_RATES = (6, 12, 18, 24)
HEAD_LR_MULT = 10.0  # DeepLab convention: freshly initialised heads learn 10x faster than the backbone


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1 -> 3x3 dilated -> 1x1, expansion 4) with the stride in the first 1x1.

    Shape:
        x: (N, inplanes, H, W) -> (N, 4 * planes, ceil(H / stride), ceil(W / stride))
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        # Registration order fixes the state_dict order: conv1, bn1, conv2, bn2, conv3, bn3, downsample.
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_stage(inplanes: int, planes: int, blocks: int, stride: int = 1,
               dilation: int = 1) -> nn.Sequential:
    """One ResNet stage; only its first block has a projection shortcut (``downsample``).

    The reference adds the projection whenever the stride or width changes or the stage is dilated;
    for ResNet-101 that is always block 0 of every stage (layer1 widens 64 -> 256).

    Shape:
        (N, inplanes, H, W) -> (N, 4 * planes, ceil(H / stride), ceil(W / stride))
    """
    width = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != width or dilation in (2, 4):
        downsample = nn.Sequential(nn.Conv2d(inplanes, width, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(width))
    layers = [Bottleneck(inplanes, planes, stride, dilation, downsample)]
    layers += [Bottleneck(width, planes, dilation=dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ClassifierModule(nn.Module):
    """DeepLab-v2 ASPP head: parallel 3x3 convs with dilation 6, 12, 18, 24, outputs summed.

    **Reference bug (``model/deeplab_multi.py``, ``Classifier_Module.forward``).** In the reference ``forward`` the
    ``return`` statement sits
    inside the loop over branches, so the head returns ``branch0(x) + branch1(x)``: rates 18 and 24
    exist in the state_dict but never see data or receive a gradient. All released checkpoints
    (AdaptSegNet, MaxSquare, SNR, UDAclustering) were trained this way, so ``legacy_aspp=True`` (the
    default) reproduces it; ``legacy_aspp=False`` sums all four branches as the paper describes.

    Shape:
        x: (N, in_channels, h, w) -> (N, num_classes, h, w)
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = ASPP_RATES,
                 legacy_aspp: bool = True):
        super().__init__()
        self.legacy_aspp = legacy_aspp
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in rates)
        for conv in self.conv2d_list:
            nn.init.normal_(conv.weight, 0.0, 0.01)  # biases keep PyTorch's default, as in the reference

    def forward(self, x: Tensor) -> Tensor:
        branches = self.conv2d_list[:2] if self.legacy_aspp else self.conv2d_list
        out = branches[0](x)
        for conv in branches[1:]:
            out = out + conv(x)
        return out


def upsample_to(logits: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize with ``align_corners=True``, as every original code base does (PyTorch 0.3 ``nn.Upsample``).

    Shape:
        logits: (N, C, h, w) -> (N, C, *size)
    """
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)


def reference_listings(modules: Iterable[nn.Module]) -> dict[int, int]:
    """How many times the reference's ``get_1x_lr_params_NOscale`` lists each trainable tensor of ``modules``
    (by ``id``): it walks ``module.modules()`` and calls the recursive ``.parameters()`` on each, so a tensor is
    listed once per ancestor in the walk (``model/deeplab_multi.py``; ResNet-101: a block's convs and BNs 3 times,
    ``downsample`` tensors 4 times, the stem ``conv1`` once; VGG-16 ``features`` twice)."""
    counts: dict[int, int] = {}
    for module in modules:
        for sub in module.modules():
            for p in sub.parameters():
                if p.requires_grad:
                    counts[id(p)] = counts.get(id(p), 0) + 1
    return counts


def param_groups(backbone: Iterable[nn.Module], heads: Iterable[nn.Module], lr: float,
                 backbone_lr_mult: float = 1.0, head_lr_mult: float = HEAD_LR_MULT,
                 legacy_param_multiplicity: bool = False) -> list[dict]:
    """Two optimizer groups (backbone, heads), each trainable parameter listed exactly once.

    The reference ``get_1x_lr_params_NOscale`` walks ``module.modules()`` and then calls the
    recursive ``.parameters()`` on each, so every tensor is listed once per ancestor (3x, or 4x in
    ``downsample``) and SGD applies its update that many times (``get_1x_lr_params_NOscale``, pytorch#40967). Here each
    tensor appears once. Frozen tensors (``requires_grad=False``) are left out.

    Each group carries ``lr_mult`` so that a poly schedule can set ``lr = base_lr(i) * lr_mult``. With
    ``legacy_param_multiplicity`` each group also carries ``multiplicity``, the reference's number of listings of
    each of its tensors (:func:`reference_listings` for the backbone, 1 for the heads, which the reference's
    ``get_10x_lr_params`` lists once), for :class:`udalib.methods.base.ListingSGD`.
    """
    backbone, heads = list(backbone), list(heads)
    seen: set[int] = set()

    def unique_trainable(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
        params = []
        for module in modules:
            for p in module.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    groups = [
        {"name": "backbone", "params": unique_trainable(backbone), "lr": lr * backbone_lr_mult,
         "lr_mult": backbone_lr_mult},
        {"name": "heads", "params": unique_trainable(heads), "lr": lr * head_lr_mult,
         "lr_mult": head_lr_mult},
    ]
    if legacy_param_multiplicity:
        listings = reference_listings(backbone)
        groups[0]["multiplicity"] = [listings[id(p)] for p in groups[0]["params"]]
        groups[1]["multiplicity"] = [1] * len(groups[1]["params"])
    return groups


class DeepLabV2(nn.Module):
    """DeepLab-v2 ResNet-101, single-level (one head on layer4) or multi-level (+ head on layer3).

    Args:
        num_classes: output channels of the ASPP heads.
        multi_level: True builds ``layer5`` = ASPP(1024) on layer3 (auxiliary) and ``layer6`` =
            ASPP(2048) on layer4 (main), as ``DeeplabMulti``; False builds only ``layer5`` = ASPP(2048)
            on layer4, as AdaptSegNet's ``Res_Deeplab``.
        legacy_aspp: reproduce the reference ASPP bug (see :class:`ClassifierModule`).
        freeze_bn_affine: set ``requires_grad=False`` on every BatchNorm weight and bias, as
            AdaptSegNet does. MaxSquare, SNR and UDAclustering freeze only the stem ``bn1``, which is
            frozen here in every case. Either way BN stays in train mode (batch statistics) unless
            the caller switches it off; that is the reference behaviour (AdaptSegNet ``train_gta2cityscapes_multi.py``).
        blocks: bottlenecks per stage; (3, 4, 23, 3) is ResNet-101. Fewer blocks give a cheap model
            with the same key pattern, for tests.

    Returns from ``forward`` a dict: ``"out"`` main logits and, multi-level only, ``"aux"`` layer3
    logits, both upsampled to the input size; ``"feat"`` the layer4 features at stride 8.

    Shape:
        x: (N, 3, H, W) -> out, aux: (N, num_classes, H, W); feat: (N, 2048, h, w) with
        h = ceil(h1 / 2) where h1 = ceil((ceil(H / 2) - 1) / 2) + 1 (stem conv, ceil-mode max-pool,
        layer2's stride), e.g. 512x1024 -> 65x129.
    """

    def __init__(self, num_classes: int, multi_level: bool = True, legacy_aspp: bool = True,
                 freeze_bn_affine: bool = False, blocks: Sequence[int] = BLOCKS_RESNET101):
        super().__init__()
        self.num_classes = num_classes
        self.multi_level = multi_level
        self.feat_channels = 2048  # layer4
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.layer1 = make_stage(64, 64, blocks[0])
        self.layer2 = make_stage(256, 128, blocks[1], stride=2)
        self.layer3 = make_stage(512, 256, blocks[2], dilation=2)
        self.layer4 = make_stage(1024, 512, blocks[3], dilation=4)
        if multi_level:
            self.layer5 = ClassifierModule(1024, num_classes, legacy_aspp=legacy_aspp)
            self.layer6 = ClassifierModule(2048, num_classes, legacy_aspp=legacy_aspp)
        else:
            self.layer5 = ClassifierModule(2048, num_classes, legacy_aspp=legacy_aspp)
        self._init_backbone()
        frozen_bns = self.modules() if freeze_bn_affine else [self.bn1]
        for bn in frozen_bns:
            if isinstance(bn, nn.BatchNorm2d):
                bn.requires_grad_(False)

    def _init_backbone(self) -> None:
        # N(0, 0.01) for every backbone conv, as the reference; it only matters until the ImageNet
        # init (``load_imagenet_init``) overwrites it. The heads were initialised by ClassifierModule.
        for m in self.backbone_modules():
            for sub in m.modules():
                if isinstance(sub, nn.Conv2d):
                    nn.init.normal_(sub.weight, 0.0, 0.01)
                elif isinstance(sub, nn.BatchNorm2d):
                    nn.init.ones_(sub.weight)
                    nn.init.zeros_(sub.bias)

    def backbone_modules(self) -> list[nn.Module]:
        """The modules of optimizer group 0 (1x lr), in the reference's order."""
        return [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4]

    def head_modules(self) -> list[nn.Module]:
        """The ASPP heads (optimizer group 1, 10x lr)."""
        return [self.layer5, self.layer6] if self.multi_level else [self.layer5]

    @property
    def main_head(self) -> ClassifierModule:
        """The head on layer4 (``layer6`` multi-level, ``layer5`` single-level)."""
        return self.layer6 if self.multi_level else self.layer5

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        size = x.shape[-2:]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # stride 4 (ceil)
        x = self.layer2(self.layer1(x))                       # stride 8
        x3 = self.layer3(x)                                   # (N, 1024, h, w)
        x4 = self.layer4(x3)                                  # (N, 2048, h, w)
        outputs = {"out": upsample_to(self.main_head(x4), size)}
        if self.multi_level:
            outputs["aux"] = upsample_to(self.layer5(x3), size)
        outputs["feat"] = x4
        return outputs

    def optim_groups(self, lr: float, legacy_param_multiplicity: bool = False) -> list[dict]:
        """Optimizer groups: backbone at ``lr``, heads at ``10 * lr``; each parameter exactly once.

        ``legacy_param_multiplicity=True`` adds each tensor's number of listings in the reference's group 0
        (``conv1.weight`` once, block tensors 3 times, ``downsample`` tensors 4 times), with which
        :class:`udalib.methods.base.ListingSGD` reproduces the reference's SGD step exactly (about 3x the nominal
        backbone step, and more weight decay). Record which setting produced a number.
        """
        return param_groups(self.backbone_modules(), self.head_modules(), lr,
                            legacy_param_multiplicity=legacy_param_multiplicity)
