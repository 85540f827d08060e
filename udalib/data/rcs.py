"""Rare-class sampling (RCS) -- Hoyer, Dai, Van Gool, "DAFormer", CVPR 2022, Sec. 3.3, Eq. (6): source images are
drawn class first, the rarer a class the likelier, so that rare classes are seen early and often, as
``lhoyer/DAFormer`` ``mmseg/datasets/uda_dataset.py`` does (``get_rcs_class_probs``, lines 12-35;
``UDADataset.get_rare_class_sample``, lines 84-103), from the per-image class statistics of
``tools/convert_datasets/gta.py`` (lines 30-40).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

# DAFormer's rcs_min_pixels (configs/daformer/*.py: min_pixels=3000): an image counts for class c when more than 3000
# of its label pixels are c, counted on the GTA5 label files as stored (1914 x 1052). udalib scales it by area to the
# labels it loads: round(3000 x H x W / (1914 x 1052)), 12 pixels on MiniCity's 64 x 128, 1373 on GTA5 at 1280 x 720
RCS_MIN_PIXELS, RCS_REFERENCE_PIXELS = 3000, 1914 * 1052


def rcs_class_probs(pixels: np.ndarray, temperature: float) -> np.ndarray:
    r"""The probability of drawing each class, from its pixel count :math:`n_c` over the source labels:

    .. math:: f_c = \frac{n_c}{\sum_{c'} n_{c'}}, \qquad
              P(c) = \frac{e^{(1 - f_c)/T}}{\sum_{c'} e^{(1 - f_{c'})/T}}

    over the classes present (:math:`n_c > 0`; an absent class gets 0, as the original's statistics list only the
    classes they saw). A small :math:`T` (0.01) favours the rare classes strongly; :math:`T \to \infty` is uniform.

    Shape:
        pixels ``(C,)`` -> ``(C,)``, summing to 1.
    """
    if not temperature > 0:
        raise ValueError(f"the rare-class sampling temperature must be above 0, got {temperature}")
    pixels = np.asarray(pixels, dtype=np.float64)
    present = pixels > 0
    freq = pixels[present] / pixels[present].sum()
    probs = np.zeros_like(pixels)
    probs[present] = torch.softmax(torch.from_numpy((1 - freq) / temperature), dim=0).numpy()
    return probs


_CLASS_PIXELS: dict[tuple, np.ndarray] = {}  # (folder, list, size, class set) -> (N, C) counts


def class_pixels(dataset) -> np.ndarray:
    """``(N, C)`` pixel count of every class in every label of ``dataset`` (a :class:`SegmentationList`), as its
    labels load (resized, mapped to its class set); computed once per dataset and process (MiniCity's 600 labels:
    well under a second)."""
    key = (str(dataset.root), dataset.name, dataset.size, repr(dataset.class_set))
    if key not in _CLASS_PIXELS:
        labels = (dataset.load(i)[1] for i in range(len(dataset)))
        _CLASS_PIXELS[key] = np.stack([np.bincount(y.ravel(), minlength=256)[: dataset.num_classes] for y in labels])
    return _CLASS_PIXELS[key]


class RareClassSampling(Dataset):
    """The source images of ``dataset`` drawn by rare-class sampling: item ``(index, seed)`` (what the loop's
    :class:`~udalib.data.dataset.StreamSampler` asks for) ignores ``index`` and, from ``seed``, draws a class
    :math:`c \\sim P(c)` (:func:`rcs_class_probs`), then uniformly one of the images with more than ``min_pixels``
    pixels of :math:`c`, augmented from a seed drawn next. Batch ``k`` of a stream therefore still depends only on
    ``(seed, k)``: a resumed run draws the same images. A plain integer index reads that image, unsampled.

    ``min_pixels``: None scales DAFormer's 3000 by area to the size of the labels (:data:`RCS_MIN_PIXELS`). The
    original then re-crops an image up to 10 times until its 512 x 512 crop holds 1500 pixels of :math:`c`
    (``min_crop_ratio`` 0.5); udalib trains on whole images, so there is no crop to redo.
    """

    def __init__(self, dataset, temperature: float, min_pixels: int | None = None):
        self.dataset = dataset
        pixels = class_pixels(dataset)  # (N, C)
        if min_pixels is None:
            h, w = dataset.load(0)[1].shape
            min_pixels = round(RCS_MIN_PIXELS * h * w / RCS_REFERENCE_PIXELS)
        self.temperature, self.min_pixels = temperature, min_pixels
        self.probs = rcs_class_probs(pixels.sum(axis=0), temperature)
        self.images_with = [np.flatnonzero(pixels[:, c] > min_pixels) for c in range(pixels.shape[1])]
        empty = [c for c, p in enumerate(self.probs) if p > 0 and not len(self.images_with[c])]
        if empty:  # the original asserts the same (uda_dataset.py:73)
            raise ValueError(f"rare-class sampling: no image of {dataset.name} has more than {min_pixels} pixels of "
                             f"class {empty[0]}; pass a smaller min_pixels")

    def __len__(self) -> int:
        return len(self.dataset)

    def draw(self, seed) -> tuple[int, int, int]:
        """``(class, image index, augmentation seed)`` drawn from ``seed`` (an int or a tuple of ints)."""
        rng = np.random.default_rng(seed)
        c = int(rng.choice(len(self.probs), p=self.probs))
        return c, int(rng.choice(self.images_with[c])), int(rng.integers(2**63))

    def __getitem__(self, item):
        if not isinstance(item, tuple):
            return self.dataset[item]
        _, index, seed = self.draw(item[1])
        return self.dataset[(index, seed)]

    def __repr__(self) -> str:
        return f"RareClassSampling({self.dataset!r}, temperature={self.temperature}, min_pixels={self.min_pixels})"


def rare_class_sampling(dataset, temperature: float | None) -> Dataset:
    """``dataset`` as the training loop should draw it: :class:`RareClassSampling` at ``temperature``, or as it is
    for None (``Experiment.rcs_temperature``)."""
    return dataset if temperature is None else RareClassSampling(dataset, temperature)
