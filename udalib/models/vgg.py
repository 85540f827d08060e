"""DeepLab-v2 with a VGG-16 backbone (AdaptSegNet ``deeplab_vgg.py``, UDAclustering ``DeeplabVGG``).

The backbone is torchvision's ``vgg16().features`` with pool4 (index 23) and pool5 (index 30)
removed, so the indices after 22 shift down by one; conv5_1..3 (``features.23/25/27``) dilate by 2.
Two dilated 3x3 convs replace the fully connected layers: fc6 (``features.29``, 512 -> 1024) and fc7
(``features.31``, 1024 -> 1024), both with dilation 4. Three pools remain, so the output stride is 8
(512x1024 -> 64x128). The head is the same ASPP :class:`ClassifierModule` as the ResNet model.

The layer list is built here (not taken from torchvision), so no weights are downloaded; use
:func:`load_torchvision_vgg16` to copy an ImageNet ``vgg16`` state_dict into it.

**Input mismatch in UDAclustering (``LTTM/UDAclustering``, its ``DeeplabVGG``):** it initialises from torchvision's
``vgg16-397923af.pth`` (trained on RGB in [0, 1] normalised by ImageNet mean/std) but feeds BGR,
mean-subtracted 0..255 images. Reproduce that knowingly or fix the preprocessing; the model does not
care which.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from udalib.models.checkpoint import CheckpointError, LoadReport, load_state_dict_file
from udalib.models.deeplabv2 import ClassifierModule, param_groups, upsample_to

# (out_channels, dilation) per 3x3 conv, "M" = 2x2/2 max-pool; pool4 and pool5 are gone.
_VGG16_DILATED = [(64, 1), (64, 1), "M", (128, 1), (128, 1), "M",
                  (256, 1), (256, 1), (256, 1), "M", (512, 1), (512, 1), (512, 1),
                  (512, 2), (512, 2), (512, 2), (1024, 4), (1024, 4)]


def vgg16_dilated_features() -> nn.Sequential:
    """conv1_1 .. conv5_3 (conv5 dilated 2), fc6 and fc7 as 3x3 convs dilated 4, each + ReLU.

    Indices equal the reference's after it deletes pool4 and pool5: conv5 = 23, 25, 27; fc6 = 29;
    fc7 = 31.

    Shape:
        (N, 3, H, W) -> (N, 1024, floor(floor(floor(H / 2) / 2) / 2), same for W)
    """
    layers: list[nn.Module] = []
    in_ch = 3
    for item in _VGG16_DILATED:
        if item == "M":
            layers.append(nn.MaxPool2d(2, stride=2))
            continue
        out_ch, dilation = item
        layers += [nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation),
                   nn.ReLU(inplace=True)]
        in_ch = out_ch
    return nn.Sequential(*layers)


class DeepLabV2VGG(nn.Module):
    """DeepLab-v2 VGG-16: dilated VGG features, then one ASPP head (no auxiliary output).

    Args:
        num_classes: output channels of the ASPP head.
        legacy_aspp: reproduce the reference ASPP bug (only rates 6 and 12; see ClassifierModule).

    Returns from ``forward`` a dict: ``"out"`` logits upsampled to the input size
    (``align_corners=True``) and ``"feat"`` the fc7 output (after ReLU) at stride 8.

    Shape:
        x: (N, 3, H, W) -> out: (N, num_classes, H, W); feat: (N, 1024, H // 8, W // 8) when H, W
        are multiples of 8 (each 2x2 pool floors).
    """

    def __init__(self, num_classes: int, legacy_aspp: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.feat_channels = 1024  # fc7
        self.features = vgg16_dilated_features()
        self.classifier = ClassifierModule(1024, num_classes, legacy_aspp=legacy_aspp)
        # torchvision's VGG init for the backbone (only matters without an ImageNet init).
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    @property
    def main_head(self) -> ClassifierModule:
        return self.classifier

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feat = self.features(x)  # (N, 1024, h, w), stride 8
        return {"out": upsample_to(self.classifier(feat), x.shape[-2:]), "feat": feat}

    def optim_groups(self, lr: float, legacy_param_multiplicity: bool = False) -> list[dict]:
        """Backbone (``features``) at ``lr`` and head (``classifier``) at ``10 * lr``, each once.

        UDAclustering's ``optim_parameters`` gives both groups 1x lr (and lists every backbone
        tensor twice), but its ``poly_lr_scheduler`` overwrites group 1 with 10x lr on every step,
        so the classifier effectively trains at 10x; that is what this returns directly.
        ``legacy_param_multiplicity=True`` records the two listings of every ``features`` tensor (see
        :func:`udalib.models.deeplabv2.param_groups`).
        """
        return param_groups([self.features], [self.classifier], lr,
                            legacy_param_multiplicity=legacy_param_multiplicity)


# torchvision vgg16 ``features`` index -> index here: unchanged up to conv4_3 (22); pool4 (23) is
# gone, so conv5_1..3 move from 24/26/28 to 23/25/27. pool5 and the linear classifier are dropped.
_TORCHVISION_TO_DILATED = {i: i for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)} | {24: 23, 26: 25, 28: 27}


def load_torchvision_vgg16(model: DeepLabV2VGG, path: str | Path) -> LoadReport:
    """Copy the 13 conv layers of a torchvision ``vgg16`` state_dict (e.g. ``vgg16-397923af.pth``).

    fc6, fc7 and the ASPP head keep their initialisation: torchvision's fully connected layers do
    not have the shape of the dilated 3x3 convs. Raises CheckpointError if any of the 26 conv
    tensors is missing or has the wrong shape.
    """
    source = load_state_dict_file(path)
    target = model.state_dict()
    key_map = {f"features.{src}.{kind}": f"features.{dst}.{kind}"
               for src, dst in _TORCHVISION_TO_DILATED.items() for kind in ("weight", "bias")}
    missing = [k for k in key_map if k not in source]
    mismatched = [(dst, tuple(source[src].shape), tuple(target[dst].shape))
                  for src, dst in key_map.items()
                  if src in source and source[src].shape != target[dst].shape]
    if missing or mismatched:
        raise CheckpointError(f"{path}: not a torchvision vgg16 state_dict "
                              f"(missing {missing[:10]}, shape mismatches {mismatched[:10]})")
    for src, dst in key_map.items():
        target[dst] = source[src]
    model.load_state_dict(target)
    copied = set(key_map.values())
    return LoadReport(missing=[k for k in target if k not in copied],
                      unexpected=[k for k in source if k not in key_map], mismatched=[])
