"""Class names, palettes and id -> trainId lookup tables (Cityscapes' ``labels.py``, the
originals' ``info.json`` and SYNTHIA's class list).

Everything here is a constant or a small pure function. Labels inside udalib are always *trainIds*
(0..18 for the 19 Cityscapes classes, or 0..K-1 inside a class subset) with ``IGNORE_INDEX`` (255)
for unlabelled pixels. The dataset layer converts raw label files once, with :func:`encode_labels`:

>>> raw = np.array([[7, 26], [0, 33]], dtype=np.uint8)      # Cityscapes labelIds
>>> encode_labels(raw, CITYSCAPES_ID_TO_TRAINID, source="cityscapes")
array([[  0,  13],
       [255,  18]], dtype=uint8)

Three class sets exist (``CLASS_SETS``): the 19 Cityscapes classes, the 16 classes shared with
SYNTHIA, and the 13 classes used for SYNTHIA "mIoU13" and NTHU CrossCity.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from udalib.data.batch import IGNORE_INDEX

RGB = tuple[int, int, int]

# --------------------------------------------------------------------------------------------------
# The 19 Cityscapes training classes, in trainId order
# --------------------------------------------------------------------------------------------------

# NTHU CrossCity's four cities (Chen et al., ICCV 2017), the targets of Cityscapes -> CrossCity; MiniCity generates
# one domain of its own for each. The one list of them: data checks, MiniCity, the CrossCity driver and the CLI
CITIES: tuple[str, ...] = ("rome", "rio", "tokyo", "taipei")

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

# Official Cityscapes colours (cityscapesScripts / AdaptSegNet info.json). MaxSquare draws sky as
# (0, 130, 180); we keep the official (70, 130, 180).
CITYSCAPES_PALETTE: tuple[RGB, ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

IGNORE_COLOR: RGB = (0, 0, 0)  # colour of IGNORE_INDEX pixels in colorize()

# --------------------------------------------------------------------------------------------------
# Raw dataset ids -> 19 trainIds
# --------------------------------------------------------------------------------------------------

# Cityscapes labelIds that are training classes; every other labelId (0-6, 9, 10, 14-16, 18, 29, 30
# and -1 "license plate") is a valid id that maps to IGNORE_INDEX.
_CITYSCAPES_TRAIN_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)

CITYSCAPES_ID_TO_TRAINID_DICT: dict[int, int] = {
    label_id: IGNORE_INDEX for label_id in (-1, *range(34))
} | {label_id: train_id for train_id, label_id in enumerate(_CITYSCAPES_TRAIN_LABEL_IDS)}

# GTA5 labels use the Cityscapes labelId scheme.
GTA5_ID_TO_TRAINID_DICT: dict[int, int] = dict(CITYSCAPES_ID_TO_TRAINID_DICT)

# SYNTHIA-RAND-CITYSCAPES raw ids (first channel of the 16-bit GT PNG). 0 void, 13 parking-slot,
# 14 road-work and 22 lane-marking are valid ids that map to IGNORE_INDEX.
SYNTHIA_ID_TO_TRAINID_DICT: dict[int, int] = {raw_id: IGNORE_INDEX for raw_id in range(23)} | {
    1: 10, 2: 2, 3: 0, 4: 1, 5: 4, 6: 8, 7: 5, 8: 13, 9: 7, 10: 11, 11: 18,
    12: 17, 15: 6, 16: 9, 17: 12, 18: 14, 19: 15, 20: 16, 21: 3,
}

# NTHU CrossCity ``Labels/Test/*_eval.png`` hold Cityscapes labelIds, only the 13 shared classes annotated;
# they are stored as 19-class train ids and mapped to 13 classes on load (``class_set="13"``).
NTHU_ID_TO_TRAINID_DICT: dict[int, int] = dict(CITYSCAPES_ID_TO_TRAINID_DICT)

# The raw ids each dataset may contain; anything else means the caller passed the wrong kind of file.
VALID_IDS: dict[str, frozenset[int]] = {
    "cityscapes": frozenset(CITYSCAPES_ID_TO_TRAINID_DICT),
    "gta5": frozenset(GTA5_ID_TO_TRAINID_DICT),
    "synthia": frozenset(SYNTHIA_ID_TO_TRAINID_DICT),
    "nthu": frozenset(NTHU_ID_TO_TRAINID_DICT),
}


def lookup_table(id_to_trainid: Mapping[int, int]) -> np.ndarray:
    """Turn an ``{id: trainId}`` dict into a length-256 uint8 array; unlisted ids -> 255.

    Negative keys (Cityscapes' -1) have no slot in the array; :func:`encode_labels` maps them to 255.

    Shape: ``(256,)`` uint8.
    """
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for raw_id, train_id in id_to_trainid.items():
        if 0 <= raw_id < 256:
            table[raw_id] = train_id
    table.flags.writeable = False  # a shared constant: never edit it in place
    return table


# The lookup arrays that encode_labels() applies: ``table[raw_id] = trainId``.
CITYSCAPES_ID_TO_TRAINID = lookup_table(CITYSCAPES_ID_TO_TRAINID_DICT)
GTA5_ID_TO_TRAINID = lookup_table(GTA5_ID_TO_TRAINID_DICT)
SYNTHIA_ID_TO_TRAINID = lookup_table(SYNTHIA_ID_TO_TRAINID_DICT)
NTHU_ID_TO_TRAINID = lookup_table(NTHU_ID_TO_TRAINID_DICT)

# --------------------------------------------------------------------------------------------------
# Class subsets
# --------------------------------------------------------------------------------------------------

SYNTHIA16_TRAINIDS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
CLASS13_TRAINIDS: tuple[int, ...] = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
# Positions of the 13 classes inside the 16-class id space (drops wall, fence, pole): MaxSquare's
# ``synthia_set_16_to_13`` = (0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15).
CLASS13_IN_16: tuple[int, ...] = tuple(SYNTHIA16_TRAINIDS.index(t) for t in CLASS13_TRAINIDS)


@dataclass(frozen=True)
class ClassSet:
    """A set of classes evaluated together; subset id ``k`` is 19-class trainId ``train_ids[k]``."""

    name: str  # "19", "16" or "13"
    train_ids: tuple[int, ...]  # 19-class trainIds, in subset-id order
    names: tuple[str, ...]
    palette: tuple[RGB, ...]

    @property
    def num_classes(self) -> int:
        return len(self.train_ids)


def _class_set(name: str, train_ids: Sequence[int]) -> ClassSet:
    return ClassSet(name, tuple(train_ids), tuple(CITYSCAPES_CLASSES[t] for t in train_ids),
                    tuple(CITYSCAPES_PALETTE[t] for t in train_ids))


CLASS_SETS: dict[str, ClassSet] = {
    "19": _class_set("19", range(19)),
    "16": _class_set("16", SYNTHIA16_TRAINIDS),
    "13": _class_set("13", CLASS13_TRAINIDS),
}


def get_class_set(name_or_num: str | int | ClassSet) -> ClassSet:
    """Return the :class:`ClassSet` called ``"19"``, ``"16"`` or ``"13"`` (ints accepted too)."""
    if isinstance(name_or_num, ClassSet):
        return name_or_num
    key = str(name_or_num)
    if key not in CLASS_SETS:
        raise ValueError(f"unknown class set {name_or_num!r}; valid names: {', '.join(CLASS_SETS)}")
    return CLASS_SETS[key]


def _subset_lut(class_set: ClassSet) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[list(class_set.train_ids)] = np.arange(class_set.num_classes)
    return lut


def subset_table(table: np.ndarray, class_set: str | int | ClassSet) -> np.ndarray:
    """Compose a raw-id -> 19-trainId table with the 19 -> subset remapping.

    ``subset_table(SYNTHIA_ID_TO_TRAINID, "16")`` is SYNTHIA's 16-class mode: terrain, truck
    and train become 255 and the remaining classes are numbered 0..15.

    Shape: ``(256,)`` uint8 in, ``(256,)`` uint8 out.
    """
    out = _subset_lut(get_class_set(class_set))[table].astype(np.uint8)
    out.flags.writeable = False
    return out


# SYNTHIA 16-class mode (MaxSquare/UDAclustering ``class_16``): raw id -> 16-class id 0..15.
SYNTHIA_ID_TO_TRAINID16 = subset_table(SYNTHIA_ID_TO_TRAINID, "16")


def remap_to_subset(label19: np.ndarray | Tensor, class_set: str | int | ClassSet) -> np.ndarray | Tensor:
    """Map a 19-class trainId label to subset ids 0..K-1; classes outside the subset -> 255.

    .. math:: y'_{i} = k \\text{ if } y_i = \\text{train\\_ids}[k] \\text{ else } 255

    Returns the same type (numpy array or tensor), dtype and device as ``label19``.

    Shape: any, e.g. ``(N, H, W)`` -> same shape.
    """
    lut = _subset_lut(get_class_set(class_set))
    if isinstance(label19, Tensor):
        lut_t = torch.as_tensor(lut, device=label19.device)
        idx = label19.long()
        in_range = (idx >= 0) & (idx < 256)
        out = torch.where(in_range, lut_t[idx.clamp(0, 255)], IGNORE_INDEX)
        return out.to(label19.dtype)
    label19 = np.asarray(label19)
    idx = label19.astype(np.int64)
    in_range = (idx >= 0) & (idx < 256)
    return np.where(in_range, lut[np.clip(idx, 0, 255)], IGNORE_INDEX).astype(label19.dtype)


# --------------------------------------------------------------------------------------------------
# Encoding raw label files, colouring trainId maps
# --------------------------------------------------------------------------------------------------


class LabelError(ValueError):
    """A label file contains ids that its dataset never uses (wrong file kind or wrong table)."""


def _present_ids(raw: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (bincount when the value range is small)."""
    if raw.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(raw.min()), int(raw.max())
    if hi - lo > 1 << 16:
        return np.unique(raw).astype(np.int64)
    counts = np.bincount((raw.ravel().astype(np.int64) - lo), minlength=hi - lo + 1)
    return np.flatnonzero(counts) + lo


def encode_labels(raw: np.ndarray, table: np.ndarray, *, strict: bool = True, source: str = "cityscapes",
                  valid_ids: Collection[int] | None = None) -> np.ndarray:
    """Map raw dataset ids to trainIds with a lookup table: ``out = table[raw]``.

    Ids outside ``[0, 256)`` (e.g. Cityscapes' -1) map to 255. With ``strict=True`` an id that is
    not a valid id of ``source`` (``VALID_IDS[source]``, or ``valid_ids`` when given) raises
    :class:`LabelError`; valid ids that are not training classes still map to 255 silently. Passing
    trainIds, colour PNGs or another dataset's labels is the usual cause of the error.

    Shape: any integer array, e.g. ``(H, W)`` -> same shape, uint8.
    """
    raw = np.asarray(raw)
    if not np.issubdtype(raw.dtype, np.integer):
        raise LabelError(f"{source} labels must be an integer array of raw ids, got dtype {raw.dtype}")
    if strict:
        if valid_ids is None:
            if source not in VALID_IDS:
                raise ValueError(f"unknown label source {source!r}; valid: {', '.join(VALID_IDS)} "
                                 "(or pass valid_ids=..., or strict=False)")
            valid_ids = VALID_IDS[source]
        valid = set(valid_ids)
        unexpected = [int(i) for i in _present_ids(raw) if int(i) not in valid]
        if unexpected:
            shown = ", ".join(map(str, unexpected[:10])) + (", ..." if len(unexpected) > 10 else "")
            nonneg = sorted(i for i in valid if i >= 0)
            raise LabelError(
                f"unexpected ids [{shown}] for the {source} id->trainId table: labels must be {source} "
                f"label ids ({nonneg[0]}-{nonneg[-1]}); did you pass trainIds, colour PNGs or another "
                "dataset's labels? (strict=False maps unknown ids to 255)")
    idx = raw.astype(np.int64)
    in_range = (idx >= 0) & (idx < len(table))
    return np.where(in_range, np.asarray(table)[np.clip(idx, 0, len(table) - 1)], IGNORE_INDEX).astype(np.uint8)


def colorize(label: np.ndarray | Tensor, palette: Sequence[RGB] = CITYSCAPES_PALETTE) -> np.ndarray:
    """Colour a trainId map: class ``k`` -> ``palette[k]``; 255 and other unknown ids -> black.

    Shape: ``(H, W)`` integer -> ``(H, W, 3)`` uint8.
    """
    if isinstance(label, Tensor):
        label = label.detach().cpu().numpy()
    label = np.asarray(label).astype(np.int64)
    colours = np.array([*palette, IGNORE_COLOR], dtype=np.uint8)  # last row: unknown ids
    idx = np.where((label >= 0) & (label < len(palette)), label, len(palette))
    return colours[idx]
