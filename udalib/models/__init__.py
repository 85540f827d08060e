"""Segmentation models. Every model returns a dict: ``out`` (main logits at input resolution), ``aux``
(auxiliary logits, multi-level models only) and ``feat`` (the last backbone features)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def _minideeplab(num_classes: int, **kw) -> nn.Module:
    from .tiny import MiniDeepLab

    return MiniDeepLab(num_classes, **kw)


def _deeplabv2(num_classes: int, **kw) -> nn.Module:
    from .deeplabv2 import DeepLabV2

    return DeepLabV2(num_classes, multi_level=False, **kw)


def _deeplabv2_multi(num_classes: int, **kw) -> nn.Module:
    from .deeplabv2 import DeepLabV2

    return DeepLabV2(num_classes, multi_level=True, **kw)


def _deeplabv2_vgg16(num_classes: int, **kw) -> nn.Module:
    from .vgg import DeepLabV2VGG

    return DeepLabV2VGG(num_classes, **kw)


def _minideeplab_snr(num_classes: int, **kw) -> nn.Module:
    from .snr import MiniDeepLabSNR

    return MiniDeepLabSNR(num_classes, **kw)


def _deeplabv2_multi_snr(num_classes: int, **kw) -> nn.Module:
    from .snr import DeepLabV2SNR

    return DeepLabV2SNR(num_classes, **kw)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "minideeplab": _minideeplab,  # CPU-sized, multi-level; the MiniCity default
    "deeplabv2": _deeplabv2,  # ResNet-101, single-level (AdaptSegNet's Res_Deeplab)
    "deeplabv2_multi": _deeplabv2_multi,  # ResNet-101, multi-level (DeeplabMulti / ResNetMulti)
    "deeplabv2_vgg16": _deeplabv2_vgg16,  # VGG-16 DeepLab-v2
    "minideeplab_snr": _minideeplab_snr,  # MiniDeepLab with SNR blocks after stages 1-3
    "deeplabv2_multi_snr": _deeplabv2_multi_snr,  # SNR's ResNetMulti_SNR
}

# the input convention each model family expects (see udalib.data.normalize)
NORMALIZATION = {"minideeplab": "imagenet", "deeplabv2": "caffe", "deeplabv2_multi": "caffe",
                 "deeplabv2_vgg16": "caffe",
                 "minideeplab_snr": "imagenet", "deeplabv2_multi_snr": "caffe"}


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """``build_model("deeplabv2_multi", 19)``. Unknown names and keyword arguments are clear errors."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(MODELS)}")
    try:
        return MODELS[name](num_classes, **kwargs)
    except TypeError as exc:
        raise TypeError(f"model {name!r}: {exc}") from None
