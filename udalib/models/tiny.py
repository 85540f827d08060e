"""MiniDeepLab: a CPU-sized model with the DeepLab-v2 multi-level contract.

It keeps what matters to the methods: a residual backbone with BatchNorm, dilated later stages, an
auxiliary ASPP head on stage 3 and a main ASPP head on stage 4, logits bilinearly upsampled to the
input size (``align_corners=True``, as in the originals) and the stage-4 features as ``feat``. About 0.2 M
parameters; a training step on 8 MiniCity images (64x128) takes about 70 ms on 2 cores.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Block(nn.Module):
    """Two 3x3 convs with a residual connection (a 1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride, dilation)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False),
                                   nn.BatchNorm2d(cout))
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv2(self.conv1(x)) + identity)


class ASPP(nn.Module):
    """DeepLab-v2's classifier: parallel dilated 3x3 convs to C channels, summed."""

    def __init__(self, cin: int, num_classes: int, rates: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(cin, num_classes, 3, padding=r, dilation=r) for r in rates)

    def forward(self, x: Tensor) -> Tensor:
        return sum(branch(x) for branch in self.branches)


class MiniDeepLab(nn.Module):
    """Output stride 8, like DeepLab-v2: stem (/2) -> layer1 (/4) -> layer2 (/8) -> layer3 (dilation 2,
    auxiliary head) -> layer4 (dilation 4, main head).

    Shape:
        input ``(N, 3, H, W)``; ``out`` and ``aux`` ``(N, C, H, W)``; ``feat`` ``(N, 4 * width, H/8, W/8)``.
    """

    def __init__(self, num_classes: int = 19, width: int = 16, multi_level: bool = True):
        super().__init__()
        w = width
        self.num_classes = num_classes
        self.multi_level = multi_level
        self.feat_channels = 4 * w
        self.stem = conv_bn(3, w, stride=2)
        self.layer1 = Block(w, 2 * w, stride=2)
        self.layer2 = Block(2 * w, 2 * w, stride=2)
        self.layer3 = Block(2 * w, 3 * w, dilation=2)
        self.layer4 = Block(3 * w, 4 * w, dilation=4)
        self.aux_head = ASPP(3 * w, num_classes) if multi_level else None
        self.head = ASPP(4 * w, num_classes)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        size = x.shape[-2:]
        f3 = self.layer3(self.layer2(self.layer1(self.stem(x))))
        f4 = self.layer4(f3)
        up = lambda logits: F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
        out = {"out": up(self.head(f4)), "feat": f4}
        if self.aux_head is not None:
            out["aux"] = up(self.aux_head(f3))
        return out

    def optim_groups(self, lr: float) -> list[dict]:
        """One group at ``lr``: trained from scratch, the small model needs no 10x head rule."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr, "lr_mult": 1.0}]
