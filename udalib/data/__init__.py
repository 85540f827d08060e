"""Datasets: MiniCity (generated here) and the real benchmarks (prepared by ``data_scripts/``), one loader."""

from __future__ import annotations

import os
from pathlib import Path

from .batch import IGNORE_INDEX, SourceBatch, TargetBatch
from .dataset import DatasetError, SegmentationList, denormalize, eval_loader, normalize, stream

REAL_DATASETS = ("gta5", "synthia", "cityscapes", "nthu")

__all__ = ["IGNORE_INDEX", "SourceBatch", "TargetBatch", "SegmentationList", "DatasetError", "open_dataset",
           "stream", "eval_loader", "normalize", "denormalize", "REAL_DATASETS"]


def open_dataset(name: str, split: str, *, root: str | os.PathLike | None = None, train: bool = False,
                 num_classes: int = 19, size: tuple[int, int] | None = None, normalization: str = "imagenet",
                 cache: bool | None = None, class_set: str | None = None, blur: bool = False,
                 crop: tuple[int, int] | None = None) -> SegmentationList:
    """Open ``name``/``split`` for training (``train=True``: random flips) or evaluation.

    Names: ``minicity:source``, ``minicity:target``, ``minicity:<city>``, ``minicity:target-<factor>[+...]``
    (the source world with only those shift factors; a build of its own) (generated on first use, under
    ``root`` or ``data/``), and the prepared real datasets ``gta5``, ``synthia``, ``cityscapes``,
    ``nthu:<city>`` under ``root`` (the folder ``data_scripts/`` wrote). Labels are stored as 19-class train
    ids; ``class_set="16"`` or ``"13"`` maps them to that subset (SYNTHIA, CrossCity). ``blur`` (training only):
    the random Gaussian blur of the MaxSquare family; ``crop`` (training only): a random ``(H, W)`` crop (see
    :class:`SegmentationList`).
    """
    if blur and not train:
        raise ValueError("blur is a training augmentation: open the dataset with train=True, or drop blur")
    if crop is not None and not train:
        raise ValueError("crop is a training augmentation: open the dataset with train=True, or drop crop")
    dataset, _, domain = name.partition(":")
    if dataset == "minicity":
        from . import minicity

        spec = minicity.spec_for(domain)  # unknown domains and factors: an error that lists the valid ones
        if root is not None and domain not in minicity.DOMAINS:
            root = Path(root).with_name(spec.name)  # a single-factor build sits beside the default one
        folder = minicity.generate(root, spec)
        splits = spec.splits[domain]
        if split not in splits:
            raise ValueError(f"MiniCity {domain} has splits {sorted(splits)}, not {split!r}")
        return SegmentationList(folder, f"lists/{domain}_{split}.txt", num_classes=num_classes, size=size,
                                class_set=class_set, blur=blur, crop=crop,
                                hflip=train, normalization=normalization,
                                cache=True if cache is None else cache, name=f"{name}/{split}")
    if dataset in REAL_DATASETS:
        if root is None:
            raise DatasetError(f"{name!r} needs root=<folder prepared by data_scripts/> (DATA_ROOT in the "
                               "notebooks); see README, 'Real datasets'")
        domain = domain or dataset
        return SegmentationList(Path(root) / dataset, f"lists/{domain}_{split}.txt", num_classes=num_classes,
                                size=size, class_set=class_set, hflip=train, normalization=normalization, blur=blur,
                                crop=crop,
                                cache=bool(cache), name=f"{name}/{split}")
    raise ValueError(f"unknown dataset {name!r}; choose minicity:<domain> or one of {', '.join(REAL_DATASETS)}")
