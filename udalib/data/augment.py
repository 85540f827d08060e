"""Photometric augmentation of normalised image batches inside a training step (DACS's strong augmentation of its
mixed images, ``vikolss/DACS`` ``utils/transformsgpu.py`` and ``trainUDA.py`` ``strongTransform``).

Random numbers come from torch's global generator, which the training checkpoint saves: a resumed run draws the
same jitter and blur as an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.transforms import v2

from .dataset import CAFFE_BGR_MEAN, IMAGENET_MEAN, IMAGENET_STD, NORMALIZATIONS

JITTER_P = 0.8  # colorJitter > 0.2 with colorJitter ~ U(0, 1) (trainUDA.py:446, transformsgpu.py:10)
JITTER_STRENGTH = 0.25  # s=0.25 of brightness, contrast, saturation and hue (transformsgpu.py:6)
BLUR_P = 0.5  # blur > 0.5 with blur ~ U(0, 1) (trainUDA.py:450, transformsgpu.py:22)
BLUR_SIGMA = (0.15, 1.15)  # sigma ~ U(0.15, 1.15), the same along both axes (transformsgpu.py:23)


def _unit_rgb(images: Tensor, normalization: str) -> Tensor:
    """Normalised images ``(N, 3, H, W)`` -> RGB in [0, 1]."""
    if normalization == "imagenet":
        return images * images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1) + images.new_tensor(IMAGENET_MEAN).view(
            1, 3, 1, 1)
    if normalization == "caffe":
        return ((images + images.new_tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)) / 255).flip(1)
    raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}")


def _normalised(rgb: Tensor, normalization: str) -> Tensor:
    """Inverse of :func:`_unit_rgb`."""
    if normalization == "imagenet":
        return (rgb - rgb.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / rgb.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return rgb.flip(1) * 255 - rgb.new_tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)


def color_jitter(images: Tensor, normalization: str = "imagenet", strength: float = JITTER_STRENGTH) -> Tensor:
    """Each image with its own brightness, contrast and saturation factors in ``[1 - s, 1 + s]`` and hue shift in
    ``[-s, s]``, applied in a random order (torchvision's ``ColorJitter``, on RGB in [0, 1], clamped).

    The original applies kornia's ``ColorJitter`` (version not pinned) to its caffe-normalised BGR images with the
    mean added back and divided by 255, that is to BGR read as RGB: its hue turns the other way and its saturation
    weighs the channels in the wrong order. Here the images are jittered as RGB.

    Shape:
        images ``(N, 3, H, W)`` normalised as ``normalization`` -> the same.
    """
    jitter = v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength, hue=strength)
    rgb = _unit_rgb(images.float(), normalization).clamp(0, 1)
    out = torch.stack([jitter(image) for image in rgb])  # one draw of factors and order per image
    return _normalised(out, normalization).to(images.dtype)


def blur_kernel_size(side: int) -> int:
    """The odd kernel side nearest below ``0.1 * side`` (rounded up): ``floor(ceil(0.1 s) - 0.5 + ceil(0.1 s) % 2)``
    (``transformsgpu.py``:24-25)."""
    k = math.ceil(0.1 * side)
    return int(math.floor(k - 0.5 + k % 2))


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of every image with ``sigma`` along both axes and a kernel of :func:`blur_kernel_size` of the
    height and width (kornia's ``GaussianBlur2d``: reflected borders), on the normalised images.

    Shape:
        images ``(N, 3, H, W)`` -> the same.
    """
    h, w = images.shape[-2:]
    size = [blur_kernel_size(w), blur_kernel_size(h)]  # torchvision takes (x, y)
    if max(size) <= 1:
        return images
    return v2.functional.gaussian_blur(images, kernel_size=size, sigma=[sigma, sigma])


def strong_augment(images: Tensor, normalization: str = "imagenet", jitter: bool = True,
                   blur: bool = True, strength: float = JITTER_STRENGTH) -> Tensor:
    """DACS's strong augmentation of a batch of mixed images (``strongTransform`` after the mix; its flip is off
    in ``configUDA.json``): colour jitter with probability 0.8, then a Gaussian blur with probability 0.5.

    As in the original, one draw decides jitter (and one blur) for the whole batch, and each image draws its own
    factors (kornia samples per image) and its own sigma (one ``np.random.uniform`` per image). ``strength``: the
    jitter's ``s`` (MIC's masked images: 0.2, ``color_jitter_strength`` of ``lhoyer/MIC`` ``configs/_base_/uda``).
    """
    if jitter and float(torch.rand(())) < JITTER_P:
        images = color_jitter(images, normalization, strength)
    if blur and float(torch.rand(())) < BLUR_P:
        sigmas = torch.empty(len(images)).uniform_(*BLUR_SIGMA).tolist()
        images = torch.cat([gaussian_blur(image[None], s) for image, s in zip(images, sigmas)])
    return images
