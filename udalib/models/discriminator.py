"""AdaptSegNet's fully-convolutional discriminator (Tsai et al., CVPR 2018, Sec. 3.1 and 4.1)."""

from __future__ import annotations

from torch import Tensor, nn


class FCDiscriminator(nn.Module):
    """Tells source from target segmentation maps, one decision per patch.

    Five 4x4 convolutions of stride 2 (``C -> ndf -> 2 ndf -> 4 ndf -> 8 ndf -> 1``), each but the last followed
    by LeakyReLU(0.2); no sigmoid (the losses take logits) and no upsampling. PyTorch's default initialisation,
    as in the original; with ``ndf=64`` and 19 classes it has 2.78 M parameters and the original's state_dict keys.

    Shape:
        input ``(N, C, H, W)`` softmax maps -> ``(N, 1, H/32, W/32)`` domain logits (each conv halves a side,
        rounding down).
    """

    def __init__(self, num_classes: int, ndf: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(num_classes, ndf, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(ndf, 2 * ndf, 4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(2 * ndf, 4 * ndf, 4, stride=2, padding=1)
        self.conv4 = nn.Conv2d(4 * ndf, 8 * ndf, 4, stride=2, padding=1)
        self.classifier = nn.Conv2d(8 * ndf, 1, 4, stride=2, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = self.act(conv(x))
        return self.classifier(x)
