"""One loader class for every dataset, MiniCity and the real ones alike.

A prepared dataset is a folder with ``lists/<domain>_<split>.txt`` files whose lines are ``image [label]``,
paths relative to the folder, and labels stored as train-id PNGs (255 = ignore). MiniCity is written that
way by :func:`udalib.data.minicity.generate`; GTA5, SYNTHIA, Cityscapes and NTHU CrossCity are converted to
it by ``data_scripts/``. :class:`SegmentationList` reads them all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from .batch import IGNORE_INDEX
from .labels import LabelError, get_class_set, remap_to_subset

# per-channel statistics for the two input conventions of the field
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)  # the originals' IMG_MEAN, BGR order, 0..255
NORMALIZATIONS = ("imagenet", "caffe")


class DatasetError(FileNotFoundError):
    """A dataset folder or list file is missing or malformed; the message says how to fix it."""


def normalize(image: np.ndarray, mode: str = "imagenet") -> Tensor:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float tensor.

    ``imagenet``: RGB in [0, 1], ImageNet mean/std (torchvision models, MiniDeepLab).
    ``caffe``: BGR in 0..255 minus the originals' ``IMG_MEAN`` (the released DeepLab-v2 checkpoints expect this).
    """
    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)
    if mode == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (x / 255 - mean) / std
    if mode == "caffe":
        return x.flip(0) - torch.tensor(CAFFE_BGR_MEAN).view(3, 1, 1)
    raise ValueError(f"unknown normalization {mode!r}; choose one of {NORMALIZATIONS}")


def denormalize(x: Tensor, mode: str = "imagenet") -> np.ndarray:
    """Inverse of :func:`normalize` for display: ``(3, H, W)`` -> ``(H, W, 3)`` uint8."""
    x = x.detach().float().cpu()
    if mode == "imagenet":
        x = (x * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) * 255
    elif mode == "caffe":
        x = (x + torch.tensor(CAFFE_BGR_MEAN).view(3, 1, 1)).flip(0)
    else:
        raise ValueError(f"unknown normalization {mode!r}; choose one of {NORMALIZATIONS}")
    return x.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


class SegmentationList(Dataset):
    """Images, and labels where the list has them, from a prepared dataset folder.

    Items are ``(image, label, index)``: ``image`` ``(3, H, W)`` float, ``label`` ``(H, W)`` int64 train ids
    (all ``IGNORE_INDEX`` for unlabelled lists), ``index`` the item's position. An item may be requested as
    ``(index, seed)``: the seed then drives the random augmentation, so a data stream is reproducible
    exactly, in any worker, after any resume.

    Args:
        root: the prepared dataset folder.
        list_file: path of the list, relative to ``root`` (e.g. ``lists/target_val.txt``).
        num_classes: label ids must lie in ``[0, num_classes)`` or equal 255; anything else is an error.
        size: ``(H, W)`` to resize to (images bicubic, labels nearest), or None to keep the stored size.
        hflip: random horizontal flip (training only).
        normalization: ``"imagenet"`` or ``"caffe"``, see :func:`normalize`.
        cache: keep decoded arrays in memory (MiniCity: a few MB).
        class_set: ``"16"`` or ``"13"`` to map the stored 19-class train ids to that subset (others -> 255).
        blur: random Gaussian blur of the image (training only; labels untouched): with probability 0.5, PIL's
            ``GaussianBlur`` with a radius drawn uniformly from [0, 1), as MaxSquare, SNR and UDAclustering do to
            source and target images (``datasets/cityscapes_Dataset.py`` ``_train_sync_transform``, after the
            mirror and the resize). Drawn from the item's seed, after the flip's draw.
        crop: ``(H, W)`` of a random crop of the image and its label, after the resize (training only; DACS's
            ``RandomCrop_gta`` / ``RandomCrop_city``, ``vikolss/DACS`` ``data/augmentations.py``). Drawn from the
            item's seed after the flip's and the blur's draws, so a list without it draws as before.
    """

    def __init__(self, root: str | os.PathLike, list_file: str, *, num_classes: int = 19,
                 size: tuple[int, int] | None = None, hflip: bool = False, normalization: str = "imagenet",
                 cache: bool = False, name: str | None = None, class_set: str | None = None, blur: bool = False,
                 crop: tuple[int, int] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder {self.root} does not exist: generate MiniCity with "
                               "`python -m udalib minicity`, or prepare a real dataset with data_scripts/ "
                               "(see README, 'Real datasets')")
        path = self.root / list_file
        if not path.is_file():
            lists = sorted(p.name for p in (self.root / "lists").glob("*.txt"))
            raise DatasetError(f"list file {path} not found; lists present in {self.root / 'lists'}: "
                               f"{', '.join(lists) or 'none'}")
        self.items = [line.split() for line in path.read_text().splitlines() if line.strip()]
        if not self.items:
            raise DatasetError(f"list file {path} is empty")
        bad = [i for i, item in enumerate(self.items) if len(item) not in (1, 2)]
        if bad:
            raise DatasetError(f"{path}, line {bad[0] + 1}: expected 'image [label]', got {self.items[bad[0]]}")
        self.labelled = all(len(item) == 2 for item in self.items)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}")
        self.num_classes, self.size, self.hflip, self.blur = num_classes, size, hflip, blur
        self.crop = tuple(crop) if crop is not None else None
        self.normalization, self.name = normalization, name or f"{self.root.name}:{list_file}"
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] | None = {} if cache else None
        self.class_set = get_class_set(class_set) if class_set not in (None, "19", 19) else None
        if self.class_set is not None and num_classes != 19:
            raise ValueError("class_set maps stored 19-class train ids: keep num_classes=19 for the check")

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        kind = "labelled" if self.labelled else "unlabelled"
        return f"SegmentationList({self.name!r}, {len(self)} images, {kind})"

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Decoded ``(image (H,W,3) uint8, label (H,W) uint8 or None)``, resized, checked, not augmented."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        item = self.items[index]
        image_path = self.root / item[0]
        try:
            image = Image.open(image_path).convert("RGB")
        except FileNotFoundError:
            raise DatasetError(f"image {image_path} listed in {self.name} is missing") from None
        except (OSError, SyntaxError) as exc:  # truncated or not an image
            raise ValueError(f"image {image_path} listed in {self.name} is unreadable ({exc}); re-run the dataset's "
                             "data_script (MiniCity: python -m udalib minicity --overwrite)") from None
        label = None
        if len(item) == 2:
            label_path = self.root / item[1]
            try:
                label = Image.open(label_path)
                label.load()
            except FileNotFoundError:
                raise DatasetError(f"label {label_path} listed in {self.name} is missing") from None
            except (OSError, SyntaxError) as exc:  # truncated or not an image
                raise ValueError(f"label {label_path} listed in {self.name} is unreadable ({exc}); re-run the "
                                 "dataset's data_script (MiniCity: python -m udalib minicity --overwrite)") from None
            if label.size != image.size:
                raise ValueError(f"{label_path}: label is {label.size[0]}x{label.size[1]} but its image is "
                                 f"{image.size[0]}x{image.size[1]} (W x H); re-run the dataset's data_script")
        if self.size is not None:
            wh = (self.size[1], self.size[0])
            image = image.resize(wh, Image.BICUBIC)
            label = label.resize(wh, Image.NEAREST) if label is not None else None
        image = np.asarray(image)
        if label is not None:
            label = np.asarray(label)
            if label.ndim != 2:
                raise LabelError(f"{self.root / item[1]}: expected a single-channel train-id PNG, got shape "
                                 f"{label.shape}; convert colour or raw-id labels with data_scripts/")
            invalid = (label >= self.num_classes) & (label != IGNORE_INDEX)
            if invalid.any():
                ids = sorted(int(v) for v in np.unique(label[invalid]))[:10]
                raise LabelError(f"{self.root / item[1]}: label ids {ids} are outside the {self.num_classes} "
                                 f"train ids (and 255 = ignore); raw dataset ids must be converted with "
                                 f"data_scripts/ first")
            if self.class_set is not None:
                label = remap_to_subset(label, self.class_set)
        if self._cache is not None:
            self._cache[index] = (image, label)
        return image, label

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Tensor, Tensor, int, bool]:
        """``(image, label, index, flipped)``; ``flipped`` tells a self-training method to flip its stored
        pseudo-label of ``index`` the same way."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        image, label = self.load(index)
        if label is None:
            label = np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
        rng = np.random.default_rng(seed) if seed is not None else None
        flipped = bool(self.hflip and rng is not None and rng.random() < 0.5)
        if flipped:
            image, label = image[:, ::-1], label[:, ::-1]
        if self.blur and rng is not None:
            if not self.hflip:
                rng.random()  # the flip's draw, so that the blur's draws do not depend on hflip
            if rng.random() < 0.5:
                blur = ImageFilter.GaussianBlur(radius=rng.random())
                image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).filter(blur))
        if self.crop is not None and rng is not None:
            (h, w), (ch, cw) = label.shape, self.crop
            if ch > h or cw > w:
                raise ValueError(f"{self.name}: crop {ch}x{cw} is larger than image {index} ({h}x{w})")
            top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
            image, label = image[top:top + ch, left:left + cw], label[top:top + ch, left:left + cw]
        return (normalize(image, self.normalization), torch.from_numpy(np.array(label, dtype=np.int64)),
                index, flipped)


class StreamSampler(Sampler):
    """An endless, reproducible stream of batches of ``(index, augmentation seed)``.

    Batch ``k`` depends only on ``(seed, k)``: epoch ``k // batches_per_epoch`` is a fresh permutation. A
    stream restarted at ``start=k`` yields exactly what the uninterrupted stream would have from batch ``k``
    on, which is how :func:`udalib.train.fit` resumes exactly. Under DDP each rank passes its own ``rank`` and
    draws a disjoint slice of every permutation.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, start: int = 0, rank: int = 0, world: int = 1):
        if n < batch_size * world:
            raise ValueError(f"dataset of {n} images is smaller than one batch ({batch_size} x {world} ranks)")
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start
        self.rank, self.world = rank, world
        self.per_epoch = n // (batch_size * world)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        k = self.start
        while True:
            epoch, pos = divmod(k, self.per_epoch)
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            first = (pos * self.world + self.rank) * self.batch_size
            idx = perm[first:first + self.batch_size].tolist()
            yield [(i, (self.seed, epoch, i)) for i in idx]
            k += 1


def stream(dataset: Dataset, batch_size: int, *, seed: int = 0, start: int = 0, workers: int = 0,
           rank: int = 0, world: int = 1, pin_memory: bool = False) -> Iterator:
    """An endless iterator of ``(image, label, index, flipped)`` batches, starting at batch ``start``."""
    sampler = StreamSampler(len(dataset), batch_size, seed, start, rank, world)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                         pin_memory=pin_memory, persistent_workers=workers > 0)
    return iter(loader)


def eval_loader(dataset: Dataset, batch_size: int = 16, workers: int = 0) -> torch.utils.data.DataLoader:
    """Every item once, in order, no augmentation."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
